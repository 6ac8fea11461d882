//! An ARM template exported from API Management (Azure portal: API Management -> Export
//! template; `az group export`): the API resource
//! (`Microsoft.ApiManagement/service/apis`) holds `properties.serviceUrl`, its policy resource
//! (`Microsoft.ApiManagement/service/apis/policies`) the policy document in
//! `properties.value` (format `xml` or `rawxml`). The first API with a policy that validates
//! tokens is read; others are named in the output for the operator.

use serde_json::Value;

use super::ImportError;

/// What the conversion needs from an export.
#[derive(Debug)]
pub(super) struct Api {
    /// The policy document (XML).
    pub policy: String,
    /// `properties.serviceUrl` of the API the policy belongs to, when it has one.
    pub service_url: Option<String>,
}

const API: &str = "microsoft.apimanagement/service/apis";
const API_POLICY: &str = "microsoft.apimanagement/service/apis/policies";
const SERVICE_POLICY: &str = "microsoft.apimanagement/service/policies";

/// Reads the policy and its API's service URL out of an ARM template.
///
/// # Errors
/// Not JSON, no `resources` array, or no policy resource that validates tokens.
pub(super) fn read(text: &str) -> Result<Api, ImportError> {
    let doc: Value = serde_json::from_str(text)
        .map_err(|e| ImportError::Export(format!("not well-formed JSON: {e}")))?;
    let resources = doc
        .get("resources")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            ImportError::Export(
                "no \"resources\" array: pass an ARM template exported from API Management, or the policy XML".into(),
            )
        })?;
    let kind = |r: &Value| {
        r.get("type")
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
    };
    let policies = resources
        .iter()
        .filter(|r| kind(r).is_some_and(|k| k == API_POLICY || k == SERVICE_POLICY));
    let validating = policies
        .filter_map(|r| {
            let value = r.pointer("/properties/value").and_then(Value::as_str)?;
            (value.contains("validate-jwt") || value.contains("validate-azure-ad-token"))
                .then_some((r, value))
        })
        .next();
    let Some((policy, xml)) = validating else {
        return Err(ImportError::NoPolicy);
    };
    // The API a policy belongs to: named in `dependsOn`, or the policy's name without its
    // last segment (`service/api/policy` -> `service/api`).
    let apis: Vec<&Value> = resources
        .iter()
        .filter(|r| kind(r).is_some_and(|k| k == API))
        .collect();
    let service_url = match apis.as_slice() {
        [only] => Some(*only),
        _ => apis.iter().copied().find(|api| owns(api, policy)),
    }
    .and_then(|api| api.pointer("/properties/serviceUrl"))
    .and_then(Value::as_str)
    .map(str::to_owned);
    Ok(Api {
        policy: xml.to_owned(),
        service_url,
    })
}

/// One API of an export with several.
#[derive(Debug)]
pub(super) struct ExportedApi {
    /// The resource name's last segment (`[concat(parameters('svc'), '/ehrbase')]` ->
    /// `ehrbase`).
    pub name: String,
    /// `properties.path`: the API URL suffix, where APIM serves it.
    pub path: String,
    pub service_url: Option<String>,
    /// The API's own policy document, when the export has one.
    pub policy: Option<String>,
}

/// The APIs of an export and its service-wide policy.
pub(super) type Exported = (Vec<ExportedApi>, Option<String>);

/// Every API of the export with its path, service URL and policy, and the service-wide
/// policy; `None` when the export has fewer than two APIs (then [`read`] applies).
///
/// # Errors
/// Not JSON, or no `resources` array.
pub(super) fn read_all(text: &str) -> Result<Option<Exported>, ImportError> {
    let doc: Value = serde_json::from_str(text)
        .map_err(|e| ImportError::Export(format!("not well-formed JSON: {e}")))?;
    let Some(resources) = doc.get("resources").and_then(Value::as_array) else {
        return Ok(None);
    };
    let kind = |r: &Value| {
        r.get("type")
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
    };
    let apis: Vec<&Value> = resources
        .iter()
        .filter(|r| kind(r).is_some_and(|k| k == API))
        .collect();
    if apis.len() < 2 {
        return Ok(None);
    }
    let policies: Vec<&Value> = resources
        .iter()
        .filter(|r| kind(r).is_some_and(|k| k == API_POLICY))
        .collect();
    let text_of = |r: &Value| {
        r.pointer("/properties/value")
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let service_policy = resources
        .iter()
        .filter(|r| kind(r).is_some_and(|k| k == SERVICE_POLICY))
        .find_map(text_of);
    let out = apis
        .iter()
        .map(|api| {
            let name = api
                .get("name")
                .and_then(Value::as_str)
                .map(|n| last_segment(n.trim_matches(['[', ']'])))
                .unwrap_or_default();
            let prop = |k: &str| {
                api.pointer(&format!("/properties/{k}"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            };
            ExportedApi {
                name,
                path: prop("path").unwrap_or_default(),
                service_url: prop("serviceUrl"),
                policy: policies
                    .iter()
                    .find(|p| owns(api, p))
                    .and_then(|p| text_of(p)),
            }
        })
        .collect();
    Ok(Some((out, service_policy)))
}

/// True when `policy` is the policy of `api`.
fn owns(api: &Value, policy: &Value) -> bool {
    let name = |r: &Value| {
        r.get("name")
            .and_then(Value::as_str)
            .map(|n| n.trim_matches(['[', ']']).to_owned())
    };
    let (Some(api_name), Some(policy_name)) = (name(api), name(policy)) else {
        return false;
    };
    let api_segment = last_segment(&api_name);
    let depends = policy
        .get("dependsOn")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .any(|d| {
            d.contains(&format!("'{api_segment}'")) || d.ends_with(&format!("/{api_segment}"))
        });
    depends || policy_name.contains(&format!("/{api_segment}/"))
}

/// `[concat(parameters('service'), '/ehrbase')]` -> `ehrbase`; `svc/ehrbase` -> `ehrbase`.
fn last_segment(name: &str) -> String {
    name.trim_end_matches(['\'', ')', ']'])
        .rsplit(['/', '\''])
        .next()
        .unwrap_or(name)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_arm_resources() {
        assert_eq!(
            last_segment("[concat(parameters('svc'), '/ehrbase')]"),
            "ehrbase"
        );
        assert_eq!(last_segment("svc/ehrbase"), "ehrbase");
    }

    #[test]
    fn not_an_export() {
        assert!(matches!(read("{}"), Err(ImportError::Export(_))));
        assert!(matches!(read("{"), Err(ImportError::Export(_))));
        assert!(matches!(
            read(r#"{"resources": [{"type": "Microsoft.ApiManagement/service/apis"}]}"#),
            Err(ImportError::NoPolicy)
        ));
    }
}
