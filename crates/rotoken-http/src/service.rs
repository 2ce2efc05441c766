//! A `tower::Service` over [`OAuthServer`]: buffers the body under the size
//! limit (413 beyond, without reading the rest), then awaits
//! [`OAuthServer::serve_async`] (the client registry, the minter and the
//! engine are awaited on the request's task: no blocking-pool thread is
//! parked per request).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::{BodyExt as _, Full, Limited};

use crate::admin::{AdminApi, AdminRoute, MAX_ADMIN_BODY};
use crate::{OAuthError, OAuthServer, Route};

/// Serves one route of an [`OAuthServer`], or all of them by path.
///
/// ```
/// # use std::sync::Arc;
/// # fn server() -> Arc<rotoken_http::OAuthServer> { unimplemented!() }
/// # fn f() {
/// use rotoken_http::{OAuthService, Route};
/// let all = OAuthService::new(server());                  // routes by path
/// let token = OAuthService::route(server(), Route::Token); // one endpoint
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct OAuthService {
    server: Arc<OAuthServer>,
    route: Option<Route>,
}

impl OAuthService {
    /// Serves every route, chosen by the request path.
    pub fn new(server: Arc<OAuthServer>) -> Self {
        Self { server, route: None }
    }

    /// Serves `route` whatever the path (for routers that match paths themselves).
    pub fn route(server: Arc<OAuthServer>, route: Route) -> Self {
        Self {
            server,
            route: Some(route),
        }
    }

    /// Answers one request.
    pub async fn call_async<B>(self, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<crate::BoxError>,
    {
        let limit = self.server.config().max_body_bytes;
        let request = match buffered(request, limit, || OAuthError::payload_too_large().into_response()).await {
            Ok(r) => r,
            Err(response) => return full(response),
        };
        let response = match self.route.or_else(|| self.server.route(request.uri().path())) {
            Some(route) => self.server.serve_async(route, &request).await,
            None => OAuthError::not_found().into_response(),
        };
        full(response)
    }
}

/// Reads the body up to `limit` bytes; `too_large()` beyond it (by
/// `Content-Length`, without reading, or as soon as the limit is crossed).
async fn buffered<B>(
    request: Request<B>,
    limit: usize,
    too_large: impl Fn() -> Response<Bytes>,
) -> Result<Request<Bytes>, Response<Bytes>>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<crate::BoxError>,
{
    let (parts, body) = request.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let bytes = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Err(e) => {
            tracing::debug!(error = %e, "reading the request body failed");
            return Err(OAuthError::invalid_request("the request body could not be read").into_response());
        }
    };
    Ok(Request::from_parts(parts, bytes))
}

/// Serves one route of an [`AdminApi`] (or all of them by path) with
/// [`AdminApi::serve_async`].
#[derive(Debug, Clone)]
pub struct AdminService {
    api: Arc<AdminApi>,
    route: Option<AdminRoute>,
}

impl AdminService {
    /// Serves every admin route, chosen by the request path.
    pub fn new(api: Arc<AdminApi>) -> Self {
        Self { api, route: None }
    }

    /// Serves `route` whatever the path.
    pub fn route(api: Arc<AdminApi>, route: AdminRoute) -> Self {
        Self {
            api,
            route: Some(route),
        }
    }

    /// Answers one request.
    pub async fn call_async<B>(self, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<crate::BoxError>,
    {
        let too_large = || {
            let mut r = OAuthError::payload_too_large().into_response();
            *r.body_mut() =
                Bytes::from_static(br#"{"error":"invalid_request","error_description":"the body is too large"}"#);
            r
        };
        let request = match buffered(request, MAX_ADMIN_BODY, too_large).await {
            Ok(r) => r,
            Err(response) => return full(response),
        };
        let response = match self.route {
            Some(route) => self.api.serve_async(route, &request).await,
            None => self.api.handle_async(&request).await,
        };
        full(response)
    }
}

fn full(response: Response<Bytes>) -> Response<Full<Bytes>> {
    response.map(Full::new)
}

/// `tower::Service` for a type with `call_async`: never fails, ready at once.
macro_rules! tower_service {
    ($service:ty) => {
        impl<B> tower::Service<Request<B>> for $service
        where
            B: http_body::Body + Send + 'static,
            B::Data: Send,
            B::Error: Into<crate::BoxError>,
        {
            type Response = Response<Full<Bytes>>;
            type Error = Infallible;
            type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

            fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
                Poll::Ready(Ok(()))
            }

            fn call(&mut self, request: Request<B>) -> Self::Future {
                let this = self.clone();
                Box::pin(async move { Ok(this.call_async(request).await) })
            }
        }
    };
}

tower_service!(OAuthService);
tower_service!(AdminService);
