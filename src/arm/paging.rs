//! ARM list paging: follow `nextLink` exactly as given until it is absent, but only on the
//! endpoint's own origin, and never around in a loop.

use std::collections::HashSet;

use serde::de::DeserializeOwned;
use tracing::instrument;
use url::Url;

use crate::model::Page;

use super::request::{ArmRequest, same_origin};
use super::response::RawResponse;
use super::{ArmClient, ArmError, ArmErrorKind};

/// A guard against a server that hands out endless fresh links; far above any real list.
const MAX_PAGES: usize = 10_000;

impl ArmClient {
    /// Every item of every page, starting with `request`.
    pub(super) async fn list_all<T: DeserializeOwned>(
        &self,
        request: ArmRequest<'_>,
    ) -> Result<Vec<T>, ArmError> {
        let mut items = Vec::new();
        self.for_each_page(request, |page| items.extend(page))
            .await?;
        Ok(items)
    }

    /// Hands each page's items to `on_page` as soon as the page arrives, starting with
    /// `request`, so that work on the first page can start while the next one is fetched.
    #[instrument(skip_all, fields(operation = %request.operation, resource = %request.resource))]
    pub(super) async fn for_each_page<T: DeserializeOwned>(
        &self,
        mut request: ArmRequest<'_>,
        mut on_page: impl FnMut(Vec<T>),
    ) -> Result<(), ArmError> {
        let mut seen = HashSet::from([request.url.to_string()]);
        loop {
            let response = self.send(&request).await?;
            let page: Page<T> = response.json(request.operation, request.resource)?;
            on_page(page.value);

            let next = self.next_page(&request, &response, page.next_link, &mut seen)?;
            let Some(next) = next else {
                return Ok(());
            };
            request = request.follow(next);
        }
    }

    /// The URL of the next page, or `None` at the end of the list.
    fn next_page(
        &self,
        request: &ArmRequest<'_>,
        response: &RawResponse,
        next_link: Option<String>,
        seen: &mut HashSet<String>,
    ) -> Result<Option<Url>, ArmError> {
        let Some(link) = next_link.filter(|link| !link.trim().is_empty()) else {
            return Ok(None);
        };
        let (operation, resource) = (request.operation, request.resource);
        let refuse = |why: &str| {
            let message = format!("nextLink {why}");
            response.error(ArmErrorKind::Decode, operation, resource, message)
        };

        // The link already carries api-version and the continuation token: use it unchanged.
        let url = Url::parse(&link).map_err(|_| refuse("is not an absolute URL"))?;
        if !same_origin(&url, &self.options().endpoint) {
            // The bearer token goes with every request, so it must not leave the ARM endpoint.
            return Err(refuse("points away from the ARM endpoint; not followed"));
        }
        if !seen.insert(url.to_string()) {
            return Err(refuse("repeats an earlier page; stopped to avoid a loop"));
        }
        if seen.len() > MAX_PAGES {
            return Err(refuse(&format!("chain exceeds {MAX_PAGES} pages; stopped")));
        }
        Ok(Some(url))
    }
}
