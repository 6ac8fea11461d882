# A stand-in for the Azure CLI (`az`) that entra-app.sh is run against: it records every call
# and keeps app registrations and service principals in a state directory, answering the
# commands the script uses the way the real one does: JSON by default, `--query` evaluated
# with jmespath (the library az itself uses), `-o tsv`, exit 3 for a missing resource. Its
# `az rest --method PATCH` enforces two rules of Microsoft Graph that a script must respect:
# a pre-authorization may name only a scope that exists before the request, and an enabled
# scope or app role can be neither removed nor changed.
#
# Environment: AZ_STUB_STATE (directory), AZ_STUB_TENANT, AZ_STUB_APP_ID (the appId the next
# `az ad app create` gets), AZ_STUB_VERIFIED_DOMAINS (comma-separated: when set, an https
# identifier URI on another host is refused, as Graph refuses one off the tenant's verified
# domains).
import json
import os
import sys
import uuid

import jmespath

STATE = os.environ["AZ_STUB_STATE"]
APPS = os.path.join(STATE, "apps.json")
SPS = os.path.join(STATE, "sps.json")


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return []


def save(path, value):
    with open(path, "w") as f:
        json.dump(value, f, indent=2)


def fail(message, code=1):
    print("ERROR: " + message, file=sys.stderr)
    sys.exit(code)


def parse(argv):
    words, opts, i = [], {}, 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("-"):
            value = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else True
            opts[a.lstrip("-")] = value
            i += 1 if value is True else 2
        else:
            words.append(a)
            i += 1
    return words, opts


def emit(result, opts):
    query = opts.get("query")
    if query:
        result = jmespath.search(query, result)
    if opts.get("o", opts.get("output", "json")) == "tsv":
        if result is None:
            return
        items = result if isinstance(result, list) else [result]
        for item in items:
            if isinstance(item, dict):
                print("\t".join("" if v is None else str(v) for v in item.values()))
            elif item is not None:
                print(item)
    else:
        print(json.dumps(result, indent=2))


def find_app(apps, key):
    key = key.lower()
    for app in apps:
        if app["appId"].lower() == key or app["id"].lower() == key:
            return app
    fail("Resource '%s' does not exist or one of its queried reference-property objects are not present." % key, 3)


def enabled_ids(permissions):
    return {p["id"]: p for p in permissions if p.get("isEnabled", True)}


def check_kept(old, new, what):
    for pid, p in enabled_ids(old).items():
        same = [q for q in new if q["id"] == pid]
        if not same or same[0].get("value") != p.get("value"):
            fail("Bad Request: Permission (scope or role) cannot be deleted or updated unless disabled first. (%s %s)" % (what, p.get("value")), 1)


def patch(app, body):
    verified = os.environ.get("AZ_STUB_VERIFIED_DOMAINS")
    if verified is not None:
        for uri in body.get("identifierUris", []):
            host = uri.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
            if uri.startswith("https://") and host not in verified.split(","):
                fail("Bad Request: Values of identifierUris property must use a verified domain of the organization or its subdomain: '%s' (HostNameNotOnVerifiedDomain)" % uri, 1)
    api = body.get("api", {})
    if "preAuthorizedApplications" in api:
        existing = {p["id"] for p in app["api"].get("oauth2PermissionScopes", [])}
        for pre in api["preAuthorizedApplications"]:
            for pid in pre.get("delegatedPermissionIds", []):
                if pid not in existing:
                    fail("Bad Request: Property api.preAuthorizedApplications.delegatedPermissionIds has a Permission Id that cannot be found in the AppPermissions sets.", 1)
    if "oauth2PermissionScopes" in api:
        check_kept(app["api"].get("oauth2PermissionScopes", []), api["oauth2PermissionScopes"], "scope")
    if "appRoles" in body:
        check_kept(app.get("appRoles", []), body["appRoles"], "app role")
    for key, value in body.items():
        if key == "api":
            app["api"].update(value)
        elif key in ("id", "appId"):
            fail("Bad Request: Property '%s' is read-only and cannot be set." % key, 1)
        else:
            app[key] = value


def main():
    with open(os.path.join(STATE, "calls.log"), "a") as log:
        log.write(json.dumps(sys.argv[1:]) + "\n")
    words, opts = parse(sys.argv[1:])
    apps, sps = load(APPS), load(SPS)
    cmd = " ".join(words)
    if cmd == "account show":
        emit({"tenantId": os.environ["AZ_STUB_TENANT"], "user": {"name": "admin@contoso.example", "type": "user"}}, opts)
    elif cmd == "ad app list":
        found = apps
        if "identifier-uri" in opts:
            found = [a for a in found if opts["identifier-uri"] in a.get("identifierUris", [])]
        if "display-name" in opts:
            found = [a for a in found if a["displayName"].startswith(opts["display-name"])]
        emit(found, opts)
    elif cmd == "ad app create":
        app = {
            "id": str(uuid.uuid4()),
            "appId": os.environ.get("AZ_STUB_APP_ID") or str(uuid.uuid4()),
            "displayName": opts["display-name"],
            "signInAudience": opts.get("sign-in-audience", "AzureADMyOrg"),
            "identifierUris": [],
            "api": {"oauth2PermissionScopes": [], "preAuthorizedApplications": [], "requestedAccessTokenVersion": None},
            "appRoles": [],
        }
        apps.append(app)
        save(APPS, apps)
        emit(app, opts)
    elif cmd == "ad app show":
        emit(find_app(apps, opts["id"]), opts)
    elif cmd == "rest":
        if opts.get("method", "get").upper() != "PATCH":
            fail("stub az: only az rest --method PATCH is answered", 2)
        uri = opts["uri"]
        prefix = "https://graph.microsoft.com/v1.0/applications/"
        if not uri.startswith(prefix):
            fail("stub az: unexpected uri " + uri, 2)
        app = find_app(apps, uri[len(prefix):])
        body = opts["body"]
        if body.startswith("@"):
            with open(body[1:]) as f:
                body = f.read()
        patch(app, json.loads(body))
        save(APPS, apps)
    elif cmd == "ad sp show":
        for sp in sps:
            if sp["appId"] == opts["id"]:
                emit(sp, opts)
                return
        fail("Resource '%s' does not exist or one of its queried reference-property objects are not present." % opts["id"], 3)
    elif cmd == "ad sp create":
        find_app(apps, opts["id"])
        sp = {"id": str(uuid.uuid4()), "appId": opts["id"]}
        sps.append(sp)
        save(SPS, sps)
        emit(sp, opts)
    else:
        fail("stub az: unsupported command: az " + " ".join(sys.argv[1:]), 2)


main()
