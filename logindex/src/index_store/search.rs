//! Searching a store: tantivy's query syntax with Keel's negations
//! (`NOT x` alone means everything but `x`), a time range on every query,
//! newest-first pages, counts, and a histogram of matches over time.

use super::*;

/// Parse `q` for the schema of `R` without a store: what a rule file's
/// log query is checked with.
pub fn check_query<R: Record>(q: &str) -> Result<(), IndexError> {
    let (schema, fields) = schema::<R>();
    parse_query(&schema, &fields, q).map(|_| ())
}

/// Parse a query in tantivy's syntax against `schema` (default fields
/// `fields.defaults`).
pub(super) fn parse_query(
    schema: &Schema,
    fields: &Fields,
    q: &str,
) -> Result<Box<dyn Query>, IndexError> {
    if q.trim().is_empty() || q.trim() == "*" {
        return Ok(Box::new(tantivy::query::AllQuery));
    }
    let (_, errors) = tantivy::query_grammar::parse_query_lenient(q);
    if let Some(e) = errors.first() {
        return Err(IndexError::Query(format!(
            "invalid query at position {}: {}",
            e.pos, e.message
        )));
    }
    let ast = tantivy::query_grammar::parse_query(q)
        .map_err(|_| IndexError::Query(format!("invalid query {q:?}")))?;
    let mut parser = QueryParser::new(
        schema.clone(),
        fields.defaults.clone(),
        tantivy::tokenizer::TokenizerManager::default(),
    );
    parser.set_conjunction_by_default();
    parser
        .build_query_from_user_input_ast(all_but(splice_negations(ast)))
        .map_err(|e| IndexError::Query(format!("invalid query: {e}")))
}

/// `a AND NOT b` parses as `+a +(-b)`, and a group of exclusions alone
/// matches nothing, so it would find nothing; splice such groups into
/// their parent (`+a -b`), which is what users mean.
fn splice_negations(
    ast: tantivy::query_grammar::UserInputAst,
) -> tantivy::query_grammar::UserInputAst {
    use tantivy::query_grammar::{Occur as O, UserInputAst as A};
    match ast {
        A::Clause(children) => {
            let mut out = Vec::with_capacity(children.len());
            for (occur, child) in children {
                match splice_negations(child) {
                    A::Clause(sub)
                        if matches!(occur, None | Some(O::Must))
                            && !sub.is_empty()
                            && sub.iter().all(|(o, _)| *o == Some(O::MustNot)) =>
                    {
                        out.extend(sub)
                    }
                    other => out.push((occur, other)),
                }
            }
            A::Clause(out)
        }
        A::Boost(inner, by) => A::Boost(Box::new(splice_negations(*inner)), by),
        leaf => leaf,
    }
}

/// A query of exclusions only (`NOT level:info`) means "all but those".
fn all_but(ast: tantivy::query_grammar::UserInputAst) -> tantivy::query_grammar::UserInputAst {
    use tantivy::query_grammar::{Occur as O, UserInputAst as A, UserInputLeaf};
    let negative =
        |c: &[(Option<O>, A)]| !c.is_empty() && c.iter().all(|(o, _)| *o == Some(O::MustNot));
    match ast {
        A::Clause(mut c) if negative(&c) => {
            c.push((Some(O::Must), A::Leaf(Box::new(UserInputLeaf::All))));
            A::Clause(c)
        }
        other => other,
    }
}

impl<R: Record> IndexStore<R> {
    /// Parse a query in tantivy's syntax (default fields: the record
    /// kind's). Errors name the position (a byte offset) or the unknown field.
    pub fn parse(&self, q: &str) -> Result<Box<dyn Query>, IndexError> {
        parse_query(&self.schema, &self.fields, q)
    }

    /// `q` restricted to `lo ≤ field ≤ hi` (a column of `i64`s), read
    /// block by block ([`time_range`]).
    fn with_range(&self, q: Box<dyn Query>, field: Field, lo: i64, hi: i64) -> Box<dyn Query> {
        let range = time_range::TimeRangeQuery::new(
            self.schema.get_field_name(field),
            lo,
            hi,
            self.blocks.clone(),
        );
        Box::new(BooleanQuery::new(vec![
            (Occur::Must, q),
            (Occur::Must, Box::new(range)),
        ]))
    }

    /// Records matching `q` with timestamps in `[start_ms, end_ms]`, newest
    /// first, at most `limit`, continuing after `cursor` (from a previous
    /// page) when given.
    pub fn search(
        &self,
        q: &str,
        start_ms: i64,
        end_ms: i64,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<R>, IndexError> {
        self.search_query(self.parse(q)?, start_ms, end_ms, limit, cursor)
    }

    /// As [`Self::search`], for a query built in code.
    pub fn search_query(
        &self,
        query: Box<dyn Query>,
        start_ms: i64,
        end_ms: i64,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<R>, IndexError> {
        let query = self.with_range(query, self.fields.timestamp, start_ms, end_ms);
        let below = match cursor {
            Some(c) => c
                .parse::<i64>()
                .map_err(|_| IndexError::Query(format!("invalid cursor {c:?}")))?,
            None => i64::MAX,
        };
        let query: Box<dyn Query> = if below == i64::MAX {
            query
        } else {
            self.with_range(query, self.fields.order, i64::MIN, below - 1)
        };
        let limit = limit.max(1);
        let parts = self.partitions.read().unwrap_or_else(|e| e.into_inner());
        let mut hits: Vec<(i64, String)> = Vec::new();
        for p in parts.iter().rev() {
            if p.max_ms < start_ms || p.min_ms > end_ms {
                continue;
            }
            let searcher = p.reader.searcher();
            let top: Vec<(Option<i64>, DocAddress)> = searcher.search(
                &*query,
                &TopDocs::with_limit(limit).order_by_fast_field::<i64>("order", Order::Desc),
            )?;
            for (key, addr) in top {
                let doc: TantivyDocument = searcher.doc(addr)?;
                let raw = doc
                    .get_first(self.fields.raw)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned();
                hits.push((key.unwrap_or(i64::MIN), raw));
            }
        }
        hits.sort_by_key(|h| std::cmp::Reverse(h.0));
        let more = hits.len() > limit;
        hits.truncate(limit);
        let next_cursor = if more || hits.len() == limit {
            hits.last().map(|(k, _)| k.to_string())
        } else {
            None
        };
        let records = hits
            .into_iter()
            .filter_map(|(_, raw)| serde_json::from_str::<Stored<R>>(&raw).ok())
            .map(|s| (s.seq, s.record))
            .collect();
        Ok(Page {
            records,
            next_cursor,
        })
    }

    /// How many records match, per `step_ms` bucket from `start_ms` to
    /// `end_ms` (tantivy's histogram aggregation, summed over partitions).
    pub fn histogram(
        &self,
        q: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<Vec<(i64, u64)>, IndexError> {
        if step_ms <= 0 || end_ms < start_ms {
            return Err(IndexError::Query(
                "step must be positive and end not before start".into(),
            ));
        }
        let buckets = (end_ms.saturating_sub(start_ms) / step_ms).saturating_add(1) as usize;
        if buckets > 11_000 {
            return Err(IndexError::Query(format!(
                "{buckets} buckets: more than 11,000 (use a larger step)"
            )));
        }
        let query = self.parse(q)?;
        let query = self.with_range(query, self.fields.timestamp, start_ms, end_ms);
        let aggs: Aggregations = serde_json::from_value(json!({
            "h": { "histogram": {
                "field": "timestamp",
                "interval": step_ms as f64,
                "offset": start_ms.rem_euclid(step_ms) as f64,
                "min_doc_count": 0,
            }}
        }))
        .map_err(|e| IndexError::Query(format!("aggregation: {e}")))?;
        let mut counts = vec![0u64; buckets];
        let parts = self.partitions.read().unwrap_or_else(|e| e.into_inner());
        for p in parts.iter() {
            if p.max_ms < start_ms || p.min_ms > end_ms {
                continue;
            }
            let searcher = p.reader.searcher();
            let collector = AggregationCollector::from_aggs(
                aggs.clone(),
                AggContextParams::new(Default::default(), p.index.tokenizers().clone()),
            );
            let res = searcher.search(&*query, &collector)?;
            let v = serde_json::to_value(&res).unwrap_or_default();
            for b in v["h"]["buckets"].as_array().into_iter().flatten() {
                let key = b["key"].as_f64().unwrap_or(f64::NAN) as i64;
                let n = b["doc_count"].as_u64().unwrap_or(0);
                if key >= start_ms && key <= end_ms {
                    counts[((key - start_ms) / step_ms) as usize] += n;
                }
            }
        }
        Ok(counts
            .into_iter()
            .enumerate()
            .map(|(i, n)| (start_ms + i as i64 * step_ms, n))
            .collect())
    }

    /// Records matching `q` in the range (a count, for rules and tests).
    pub fn count(&self, q: &str, start_ms: i64, end_ms: i64) -> Result<usize, IndexError> {
        let query = self.with_range(self.parse(q)?, self.fields.timestamp, start_ms, end_ms);
        let parts = self.partitions.read().unwrap_or_else(|e| e.into_inner());
        let mut n = 0;
        for p in parts.iter() {
            n += p.reader.searcher().search(&*query, &Count)?;
        }
        Ok(n)
    }
}
