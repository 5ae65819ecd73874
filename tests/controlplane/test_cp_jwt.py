"""JWT verification against a local JWKS server (keys generated in the test): RS256, ES256, EdDSA."""

from __future__ import annotations

import socket
import time

import jwt as pyjwt
import pytest

from controlplane.jwt import (
    JwksUnavailable,
    JwtError,
    JwtForbidden,
    JwtSettings,
    JwtVerifier,
    scopes_from_claims,
)
from core.settings import load_settings
from tests.fixtures_controlplane import AUDIENCE, ISSUER


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_each_algorithm_accepted(jwks, alg):
    verifier = JwtVerifier(jwks.settings())
    ident = verifier.verify(
        jwks.token(alg, org_slug="Acme", orgs=["acme", "beta"], scope="read admin openid")
    )
    assert ident.subject == "user_123"
    assert ident.org_slug == "acme"
    assert ident.memberships == ("acme", "beta")
    assert ident.scopes == ("read", "admin")


@pytest.mark.parametrize(
    "claims, message",
    [
        ({"aud": "someone-else"}, "audience"),
        ({"iss": "https://evil.example/"}, "issuer"),
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"sub": None}, "sub"),
        ({"aud": None}, "aud"),
    ],
)
def test_rejected_claims(jwks, claims, message):
    verifier = JwtVerifier(jwks.settings())
    with pytest.raises(JwtError) as err:
        verifier.verify(jwks.token("ES256", **claims))
    assert message in str(err.value)


def test_rejected_tokens(jwks):
    verifier = JwtVerifier(jwks.settings())
    with pytest.raises(JwtError):
        verifier.verify("not-a-jwt")
    with pytest.raises(JwtError, match="unsupported"):  # HMAC with a guessable secret
        verifier.verify(
            pyjwt.encode({"sub": "x", "iss": ISSUER, "aud": AUDIENCE}, "s" * 32, algorithm="HS256")
        )
    unsigned = pyjwt.encode({"sub": "x", "iss": ISSUER, "aud": AUDIENCE}, None, algorithm="none")
    with pytest.raises(JwtError, match="unsupported"):
        verifier.verify(unsigned)
    with pytest.raises(JwtError, match="unknown key"):
        verifier.verify(jwks.token("RS256", kid="no-such-kid"))
    with pytest.raises(JwtError, match="does not match"):  # ES256 token claiming the RSA key
        verifier.verify(jwks.token("ES256", kid="rsa-1"))
    # signature by a key that is not the published one
    from cryptography.hazmat.primitives.asymmetric import ec

    forged = pyjwt.encode(
        {"sub": "x", "iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 60},
        ec.generate_private_key(ec.SECP256R1()),
        algorithm="ES256",
        headers={"kid": "ec-1"},
    )
    with pytest.raises(JwtError, match="invalid token"):
        verifier.verify(forged)


def test_restricted_algorithms(jwks):
    verifier = JwtVerifier(jwks.settings(algorithms=("EdDSA",)))
    verifier.verify(jwks.token("EdDSA"))
    with pytest.raises(JwtError, match="unsupported"):
        verifier.verify(jwks.token("RS256"))


def test_jwks_is_cached(jwks):
    verifier = JwtVerifier(jwks.settings())
    verifier.verify(jwks.token("RS256"))
    before = jwks.requests
    for alg in ("RS256", "ES256", "EdDSA", "RS256"):
        verifier.verify(jwks.token(alg))
    assert jwks.requests == before


def test_jwks_unavailable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    verifier = JwtVerifier(
        JwtSettings(jwks_url=f"http://127.0.0.1:{port}/jwks", issuer=ISSUER, audience=AUDIENCE)
    )
    b64 = pyjwt.utils.base64url_encode
    # an RS256 header sends the verifier to the JWKS, which is down (the signature is never checked)
    token = b".".join(
        [b64(b'{"alg":"RS256","kid":"k","typ":"JWT"}'), b64(b'{"sub":"x"}'), b64(b"sig")]
    ).decode()
    with pytest.raises(JwksUnavailable):
        verifier.verify(token)


def test_org_resolution(jwks):
    verifier = JwtVerifier(jwks.settings())
    ident = verifier.verify(jwks.token(org_slug="acme", orgs=["acme", "beta"]))
    assert ident.org_for(None) == "acme"
    assert ident.org_for("BETA") == "beta"
    with pytest.raises(JwtForbidden):
        ident.org_for("gamma")
    only_memberships = verifier.verify(jwks.token(orgs=["solo"]))
    assert only_memberships.org_for(None) == "solo"
    several = verifier.verify(jwks.token(orgs=["a", "b"]))
    with pytest.raises(JwtForbidden):
        several.org_for(None)
    no_list = verifier.verify(jwks.token(org_slug="acme"))
    assert no_list.org_for("acme") == "acme"
    with pytest.raises(JwtForbidden):
        no_list.org_for("beta")


def test_custom_claim_names(jwks):
    verifier = JwtVerifier(jwks.settings(org_claim="https://js/org", memberships_claim="teams"))
    ident = verifier.verify(
        jwks.token(**{"https://js/org": "acme", "teams": {"acme": "admin", "beta": "member"}})
    )
    assert ident.org_slug == "acme" and ident.memberships == ("acme", "beta")


def test_scopes_from_claims():
    assert scopes_from_claims({"scope": "openid read ingest"}) == ("read", "ingest")
    assert scopes_from_claims({"scopes": ["admin", "billing", "x"]}) == ("admin", "billing")
    assert scopes_from_claims({"scopes": "read,admin"}) == ("read", "admin")
    assert scopes_from_claims({"scope": 42}) == ()
    assert scopes_from_claims({}) == ()


def test_settings_from_settings():
    assert JwtSettings.from_settings(load_settings({})) is None
    assert (
        JwtSettings.from_settings(
            load_settings({"JOULESTREAM_JWT_JWKS_URL": "http://x", "JOULESTREAM_JWT_ISSUER": "i"})
        )
        is None
    )
    s = JwtSettings.from_settings(
        load_settings(
            {
                "JOULESTREAM_JWT_JWKS_URL": "http://x",
                "JOULESTREAM_JWT_ISSUER": "i",
                "JOULESTREAM_JWT_AUDIENCE": "a",
                "JOULESTREAM_JWT_ORG_CLAIM": "org",
            }
        )
    )
    assert (s.jwks_url, s.issuer, s.audience, s.org_claim, s.memberships_claim) == (
        "http://x",
        "i",
        "a",
        "org",
        "orgs",
    )
