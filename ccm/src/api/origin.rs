//! With authentication off, the configuration manager refuses another site's page: a
//! cross-site request or a rebound domain ([`iot_auth::same_site`]). The GUI's own requests
//! (same origin) and scripts (no `Origin`) pass. With authentication on, a login is needed
//! anyway and the session cookie is `SameSite=Strict`. A refusal of a keymanager call is
//! counted with the keymanager's (`iotctl_km_admin_refused_total`).

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;

use crate::error::CcmError;
use crate::Ccm;

/// With authentication off, refuses requests from another site's page or a rebound domain.
pub async fn same_site_only(
    State(ccm): State<Ccm>,
    req: Request,
    next: Next,
) -> Result<Response, CcmError> {
    if ccm.users().is_some() {
        return Ok(next.run(req).await);
    }
    let other = {
        let h = req.headers();
        let text = |name| h.get(name).and_then(|v| v.to_str().ok());
        iot_auth::same_site::from_other_site(text(header::HOST), text(header::ORIGIN))
    };
    if other {
        if req.uri().path().starts_with("/api/keys") {
            ccm.key_metrics().admin_refused();
        }
        return Err(CcmError::Forbidden(
            "with authentication off, the configuration manager answers only its own pages and scripts: open it at an address (http://127.0.0.1:PORT), not a domain name, and not from another site".into(),
        ));
    }
    Ok(next.run(req).await)
}
