"""The authorization code flow with Authlib's OAuth2Session (a confidential client,
client_secret_basic): code + PKCE S256 with a nonce, the ID token verified by Authlib itself
against JWKS, UserInfo, a refresh (rotated; the replaced token is then refused). The user's
part is plain HTTP on the hosted sign-in page: its form, its token and its cookie.

    ISSUER=… CLIENT_ID=… CLIENT_SECRET=… REDIRECT_URI=… EMAIL=… PASSWORD=… \
    REQUESTS_CA_BUNDLE=<test CA> python authlib_flow.py

Prints `ok …` lines; exits 1 on the first failure.
"""

import html
import os
import re
import sys
from urllib.parse import urljoin

import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from authlib.integrations.base_client.errors import OAuthError
from authlib.jose import JsonWebKey, jwt

env = {k: os.environ[k] for k in ["ISSUER", "CLIENT_ID", "CLIENT_SECRET", "REDIRECT_URI", "EMAIL", "PASSWORD"]}


def check(condition, what, detail=""):
    if not condition:
        print(f"FAILED {what} {detail}")
        sys.exit(1)
    print(f"ok {what}")


def hidden(page, name):
    found = re.search(rf'name="{name}" value="([^"]*)"', page)
    check(found is not None, f"the page has a {name} field")
    return html.unescape(found.group(1))


meta = requests.get(f"{env['ISSUER']}/.well-known/openid-configuration", timeout=10).json()
check(meta["issuer"] == env["ISSUER"], "discovery names the issuer")
keys = JsonWebKey.import_key_set(requests.get(meta["jwks_uri"], timeout=10).json())

client = OAuth2Session(
    env["CLIENT_ID"],
    env["CLIENT_SECRET"],
    scope="openid email offline_access",
    redirect_uri=env["REDIRECT_URI"],
    code_challenge_method="S256",
    token_endpoint_auth_method="client_secret_basic",
)
verifier = generate_token(48)
nonce = generate_token(20)
url, state = client.create_authorization_url(meta["authorization_endpoint"], code_verifier=verifier, nonce=nonce)

# The browser's part, by hand: the sign-in page, its form posted back with its token.
browser = requests.Session()
page = browser.get(url, allow_redirects=False, timeout=10)
check(page.status_code == 200, "the sign-in page", page.status_code)
action = re.search(r'<form method="post" action="([^"]+)"', page.text).group(1)
form = {
    "request": hidden(page.text, "request"),
    "form_token": hidden(page.text, "form_token"),
    "step": "password",
    "email": env["EMAIL"],
    "password": env["PASSWORD"],
}
done = browser.post(urljoin(env["ISSUER"] + "/", action.lstrip("/")), data=form, allow_redirects=False, timeout=10)
check(done.status_code == 303, "signed in, back to the client", done.status_code)
callback = done.headers["Location"]
check(callback.startswith(env["REDIRECT_URI"]), "the callback is the client's")

token = client.fetch_token(meta["token_endpoint"], authorization_response=callback, code_verifier=verifier)
check("access_token" in token and "id_token" in token, "Authlib redeemed the code")
claims = jwt.decode(token["id_token"], keys, claims_options={
    "iss": {"essential": True, "value": env["ISSUER"]},
    "aud": {"essential": True, "value": env["CLIENT_ID"]},
    "nonce": {"essential": True, "value": nonce},
})
claims.validate()
check(True, "Authlib verified the ID token against JWKS (iss, aud, nonce, exp)")

info = client.get(meta["userinfo_endpoint"], timeout=10).json()
check(info.get("sub") == claims["sub"] and info.get("email") == env["EMAIL"], "UserInfo", info)

old = token["refresh_token"]
fresh = client.refresh_token(meta["token_endpoint"], refresh_token=old)
check(fresh.get("refresh_token") not in (None, old) and "access_token" in fresh, "Authlib refreshed, rotated")
try:
    client.refresh_token(meta["token_endpoint"], refresh_token=old)
    check(False, "the replaced refresh token is refused")
except OAuthError as e:
    check(e.error == "invalid_grant", "the replaced refresh token is refused (invalid_grant)", e.error)
