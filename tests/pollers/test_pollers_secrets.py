"""core/secrets.py: the local NaCl store and its master key rules, the AWS Secrets Manager store (botocore
Stubber: the real boto3 client, no network), and dispatch by reference."""

from __future__ import annotations

import base64
import os
import stat

import pytest

from core.secrets import (
    AWS_PREFIX,
    AwsSecretsManagerStore,
    LocalSecretStore,
    MasterKeyMissing,
    SecretNotFound,
    SecretStoreError,
    SecretStores,
    load_master_key,
    parse_master_key,
    redact,
)
from core.settings import load_settings

KEY = "sk-admin-" + "s3cr3t" * 8


def test_local_roundtrip_is_encrypted_and_bound_to_its_name():
    store = LocalSecretStore(os.urandom(32))
    ref = store.put("conn-1", KEY)
    assert ref.startswith("local:v1:") and KEY not in ref
    assert KEY.encode() not in base64.urlsafe_b64decode(ref.split(":", 3)[3])
    assert store.get(ref) == KEY and store.get(ref, "conn-1") == KEY
    assert store.put("conn-1", KEY) != ref  # random nonce
    with pytest.raises(SecretStoreError, match="another object"):
        store.get(ref, "conn-2")
    with pytest.raises(SecretNotFound, match="another master key"):
        LocalSecretStore(os.urandom(32)).get(ref)
    tampered = ref[:-6] + ("AAAAAA" if not ref.endswith("AAAAAA") else "BBBBBB")
    with pytest.raises(SecretStoreError):
        store.get(tampered)


def test_master_key_formats():
    raw = os.urandom(32)
    for text in (
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        raw.hex(),
    ):
        assert parse_master_key(text) == raw
    with pytest.raises(ValueError, match="32 random bytes"):
        parse_master_key(base64.b64encode(os.urandom(16)).decode())


def test_refuses_without_master_key_outside_the_embedded_demo(tmp_path):
    env = {"JOULESTREAM_HOME": str(tmp_path), "JOULESTREAM_DATABASE": "postgresql+psycopg://db/prod"}
    with pytest.raises(MasterKeyMissing, match="JOULESTREAM_MASTER_KEY"):
        load_master_key(load_settings(env))
    with pytest.raises(MasterKeyMissing):
        SecretStores.from_settings(load_settings(env))
    with pytest.raises(SecretStoreError, match="32 random bytes"):
        load_master_key(load_settings({**env, "JOULESTREAM_MASTER_KEY": "short"}))
    raw = os.urandom(32)
    assert load_master_key(load_settings({**env, "JOULESTREAM_MASTER_KEY": raw.hex()})) == raw
    assert not (tmp_path / "master.key").exists()


def test_embedded_demo_generates_a_private_key_once(tmp_path):
    settings = load_settings({"JOULESTREAM_HOME": str(tmp_path / "home")})
    assert settings.embedded_demo
    assert not load_settings(
        {"JOULESTREAM_HOME": str(tmp_path), "JOULESTREAM_DATABASE": "sqlite:///x.db"}
    ).embedded_demo
    assert not load_settings(
        {"JOULESTREAM_HOME": str(tmp_path), "JOULESTREAM_KAFKA": "kafka:9092"}
    ).embedded_demo
    stores = SecretStores.from_settings(settings)
    path = settings.home / "master.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    ref = stores.put("c", KEY)
    again = SecretStores.from_settings(settings)  # a restart reuses the same key
    assert again.get(ref) == KEY
    path.chmod(0o644)
    with pytest.raises(SecretStoreError, match="0600"):
        SecretStores.from_settings(settings)


def test_redact_hides_the_key_and_long_fragments():
    assert redact(f"bad key {KEY}!", KEY) == "bad key ***!"
    assert KEY[-14:] not in redact(f"Incorrect API key provided: sk-admin-****{KEY[-14:]}", KEY)
    assert redact("nothing here", KEY, None) == "nothing here"


# --------------------------------------------------------------------------------------------- AWS

ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:joulestream/connections/conn-1-AbCdEf"


@pytest.fixture
def aws():
    boto3 = pytest.importorskip("boto3")
    from botocore.stub import ANY, Stubber

    client = boto3.client(
        "secretsmanager", region_name="eu-west-1", aws_access_key_id="test", aws_secret_access_key="test"
    )
    with Stubber(client) as stubber:
        yield AwsSecretsManagerStore(client=client), stubber, ANY
        stubber.assert_no_pending_responses()


def test_aws_store_keeps_only_the_arn(aws):
    store, stubber, ANY = aws
    stubber.add_response(
        "create_secret",
        {"ARN": ARN, "Name": "joulestream/connections/conn-1"},
        {"Name": "joulestream/connections/conn-1", "SecretString": KEY, "Description": ANY, "Tags": ANY},
    )
    stubber.add_response("get_secret_value", {"ARN": ARN, "SecretString": KEY}, {"SecretId": ARN})
    stubber.add_response("delete_secret", {"ARN": ARN}, {"SecretId": ARN, "RecoveryWindowInDays": 30})
    ref = store.put("conn-1", KEY)
    assert ref == AWS_PREFIX + ARN and KEY not in ref
    assert store.get(ref, "conn-1") == KEY
    store.delete(ref)
    with pytest.raises(SecretStoreError, match="another object"):
        store.get(ref, "conn-2")


def test_aws_errors_never_echo_the_request(aws):
    store, stubber, _ = aws
    stubber.add_client_error("create_secret", "ResourceExistsException", f"exists {KEY}")
    stubber.add_client_error("get_secret_value", "ResourceNotFoundException", "gone")
    stubber.add_client_error("delete_secret", "ResourceNotFoundException", "gone")
    with pytest.raises(SecretStoreError) as info:
        store.put("conn-1", KEY)
    assert KEY not in str(info.value) and "ResourceExistsException" in str(info.value)
    with pytest.raises(SecretNotFound):
        store.get(AWS_PREFIX + ARN)
    store.delete(AWS_PREFIX + ARN)  # already gone: fine (idempotent)


def test_router_dispatches_by_reference(aws, tmp_path):
    store, stubber, ANY = aws
    local = LocalSecretStore(os.urandom(32))
    stores = SecretStores("aws", local=local, aws=store)
    stubber.add_response(
        "create_secret", {"ARN": ARN}, {"Name": ANY, "SecretString": KEY, "Description": ANY, "Tags": ANY}
    )
    stubber.add_response("get_secret_value", {"ARN": ARN, "SecretString": KEY}, {"SecretId": ARN})
    new_ref = stores.put("conn-1", KEY)
    old_ref = local.put("conn-0", "sk-admin-old")
    assert new_ref.startswith(AWS_PREFIX)
    assert stores.get(new_ref) == KEY and stores.get(old_ref) == "sk-admin-old"
    stores.delete(old_ref)  # local: nothing to remove
    with pytest.raises(SecretStoreError, match="unknown"):
        stores.get("vault:xyz")
    with pytest.raises(SecretStoreError, match="use local or aws"):
        SecretStores("vault")


def test_stores_follow_the_settings(tmp_path):
    base = {"JOULESTREAM_HOME": str(tmp_path), "JOULESTREAM_KAFKA": "kafka:9092"}
    aws = AwsSecretsManagerStore.from_settings(load_settings({**base, "JOULESTREAM_AWS_REGION": "eu-west-1"}))
    assert (aws.prefix, aws.region) == ("joulestream/connections", "eu-west-1")
    custom = load_settings({**base, "JOULESTREAM_AWS_SECRET_PREFIX": "acme/keys/"})
    assert AwsSecretsManagerStore.from_settings(custom).prefix == "acme/keys"
    stores = SecretStores.from_settings(
        load_settings({**base, "JOULESTREAM_SECRET_STORE": "local", "JOULESTREAM_MASTER_KEY": "ab" * 32})
    )
    assert stores.default == "local" and stores.get(stores.put("c", KEY), "c") == KEY
    assert (
        SecretStores.from_settings(load_settings({**base, "JOULESTREAM_SECRET_STORE": "aws"})).default
        == "aws"
    )
