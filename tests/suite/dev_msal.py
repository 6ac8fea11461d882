"""Real MSAL for Python against the `entragate dev` issuer, then the gateway.

Run by tests/suite/dev_msal.rs with the test venv's python (scripts/test.sh installs msal).
Argument: a JSON object with the authority, CA file, client IDs and secret, the API's
resource and the gateway's URL. Prints one JSON object with what each step saw: MSAL's
error fields, the access tokens' claims (never a token itself) and the gateway's status.
"""

import base64
import json
import sys
from urllib.parse import parse_qs, urlparse

import msal
import requests

cfg = json.loads(sys.argv[1])
out = {"msal_version": msal.__version__}


def claims(token):
    body = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def call(path, result):
    """The gateway's status for a request with the result's access token."""
    token = result.get("access_token")
    if not token:
        return None
    r = requests.get(cfg["gateway"] + path, headers={"Authorization": "Bearer " + token})
    return r.status_code


def errors(result):
    return {k: result.get(k) for k in ("error", "error_description", "error_codes")}


def authorize(flow):
    """The authorize step a browser would do: login_hint signs in at once; the redirect's
    query is MSAL's auth_response."""
    r = requests.get(flow["auth_uri"], verify=cfg["ca"], allow_redirects=False)
    location = r.headers.get("location", "")
    query = {k: v[0] for k, v in parse_qs(urlparse(location).query).items()}
    return r.status_code, location, query


common = dict(authority=cfg["authority"], instance_discovery=False, verify=cfg["ca"])
resource = cfg["resource"]

# 1. Client credentials (a service with a secret): .default -> the app roles granted.
app = msal.ConfidentialClientApplication(
    cfg["app_client_id"], client_credential=cfg["app_secret"], **common
)
r = app.acquire_token_for_client(scopes=[resource + "/.default"])
out["client_credentials"] = {
    **errors(r),
    "claims": claims(r["access_token"]) if "access_token" in r else None,
    "gateway": call("/app/reports", r),
}

# 2. A wrong secret: MSAL's answer for it.
wrong = msal.ConfidentialClientApplication(
    cfg["app_client_id"], client_credential="not-the-secret", **common
)
out["wrong_secret"] = errors(wrong.acquire_token_for_client(scopes=[resource + "/.default"]))

# 3. Authorization code with PKCE (a public client, as Power Query is one).
pca = msal.PublicClientApplication(cfg["public_client_id"], **common)
scopes = [resource + "/user_impersonation"]
flow = pca.initiate_auth_code_flow(
    scopes=scopes, redirect_uri="http://localhost:8400", login_hint=cfg["user"]
)
status, location, auth_response = authorize(flow)
r = pca.acquire_token_by_auth_code_flow(dict(flow), auth_response)
out["auth_code"] = {
    "authorize_status": status,
    "redirect": location.split("?")[0],
    "pkce_method": parse_qs(urlparse(flow["auth_uri"]).query).get("code_challenge_method"),
    **errors(r),
    "claims": claims(r["access_token"]) if "access_token" in r else None,
    "id_token_claims": r.get("id_token_claims"),
    "has_refresh_token": "refresh_token" in r,
    "gateway": call("/user/records", r),
}
refresh_token = r.get("refresh_token")

# 4. The same code again: codes are single-use.
out["code_replay"] = errors(pca.acquire_token_by_auth_code_flow(dict(flow), auth_response))

# 5. A code redeemed with another PKCE verifier.
flow2 = pca.initiate_auth_code_flow(
    scopes=scopes, redirect_uri="http://localhost:8400", login_hint=cfg["user"]
)
_, _, auth_response2 = authorize(flow2)
flow2["code_verifier"] = "x" * 43
out["wrong_verifier"] = errors(pca.acquire_token_by_auth_code_flow(flow2, auth_response2))

# 6. Refresh: MSAL's silent call with force_refresh redeems the cached refresh token.
accounts = pca.get_accounts()
out["accounts"] = [a.get("username") for a in accounts]
r = pca.acquire_token_silent(scopes, account=accounts[0], force_refresh=True) if accounts else {}
r = r or {}
out["refresh"] = {
    **errors(r),
    "claims": claims(r["access_token"]) if "access_token" in r else None,
    "gateway": call("/user/records", r),
}

# 7. A scope the API exposes but the client was not granted: at the authorize step ...
flow3 = pca.initiate_auth_code_flow(
    scopes=[resource + "/Reports.Read"],
    redirect_uri="http://localhost:8400",
    login_hint=cfg["user"],
)
_, _, auth_response3 = authorize(flow3)
out["not_granted_authorize"] = errors(pca.acquire_token_by_auth_code_flow(flow3, auth_response3))
# ... and at the token endpoint, with the refresh token.
out["not_granted_refresh"] = (
    errors(pca.acquire_token_by_refresh_token(refresh_token, scopes=[resource + "/Reports.Read"]))
    if refresh_token
    else None
)

print(json.dumps(out))
