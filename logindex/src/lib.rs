//! keel-logindex: the log and span index. A time-partitioned,
//! write-ahead-logged tantivy store of records ([`index_store`]), the log
//! store on it ([`logs`]: LogQL-like search, counts, log rules' queries)
//! and the span store ([`traces`]: traces by id, search, and the RED
//! metrics derived from spans, written into the metric store), and
//! what one record may hold ([`limits`]).
//!
//! It depends on the metric store only for its write-ahead framing and
//! for the span metrics; it must never depend on the PromQL engine,
//! alerting, dashboards or the collector.

pub mod index_store;
pub mod limits;
pub mod logs;
pub mod traces;
