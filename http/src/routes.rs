//! A router that remembers its paths.
//!
//! axum cannot list the routes of a `Router`, and a check that every
//! route of a listener is guarded needs that list: a route added later
//! without the guard must fail the test that walks it. Every capability's
//! `routes()` builds a [`Routes`]; the server merges them and keeps
//! [`Routes::paths`] beside the router it serves.

use axum::Router;
use axum::routing::MethodRouter;

/// An axum `Router` and the path of every route added to it.
pub struct Routes<S = ()> {
    router: Router<S>,
    paths: Vec<String>,
}

impl<S: Clone + Send + Sync + 'static> Default for Routes<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    /// No routes.
    pub fn new() -> Self {
        Self {
            router: Router::new(),
            paths: Vec::new(),
        }
    }

    /// Add a route, as `Router::route` does.
    pub fn route(mut self, path: &str, method_router: MethodRouter<S>) -> Self {
        self.router = self.router.route(path, method_router);
        self.paths.push(path.to_owned());
        self
    }

    /// Add every route of `other`.
    pub fn merge(mut self, other: Routes<S>) -> Self {
        self.router = self.router.merge(other.router);
        self.paths.extend(other.paths);
        self
    }

    /// Apply anything axum does to a router (a layer, its state) and keep
    /// the paths: `f` must not add routes (use [`Routes::route`]).
    pub fn map<S2>(self, f: impl FnOnce(Router<S>) -> Router<S2>) -> Routes<S2> {
        Routes {
            router: f(self.router),
            paths: self.paths,
        }
    }

    /// The path of every route, in the order added.
    pub fn paths(&self) -> &[String] {
        &self.paths
    }

    /// The router and its paths.
    pub fn into_parts(self) -> (Router<S>, Vec<String>) {
        (self.router, self.paths)
    }
}

impl<S> From<Routes<S>> for Router<S> {
    fn from(r: Routes<S>) -> Self {
        r.router
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::{get, post};

    #[test]
    fn every_route_added_or_merged_is_listed_once_in_order() {
        let a = Routes::<()>::new()
            .route("/a", get(|| async { "a" }))
            .route("/b/{id}", post(|| async { "b" }));
        let all = Routes::new()
            .route("/z", get(|| async { "z" }))
            .merge(a)
            .map(|r| {
                r.layer(axum::middleware::from_fn(
                    |req: axum::extract::Request, next: axum::middleware::Next| next.run(req),
                ))
            });
        assert_eq!(all.paths(), ["/z", "/a", "/b/{id}"]);
    }
}
