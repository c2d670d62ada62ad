"""One S3 identity everywhere in the DAG: landing, warehouse, output, archive, publish and links all sign their
requests as the Airflow connection `aws_default` says, whatever credentials the worker's environment carries. Run
against Ceph's RADOS Gateway, which checks every signature (moto does not)."""

from __future__ import annotations

import email
import json
import os
import re
import urllib.request
from datetime import date
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from etl.generate import GenerateOptions, generate
from etl.mail import SMTP_PLAIN
from etl.nightly import backfill
from etl.settings import S3Identity, Settings
from etl.storage import LocalStorage, client_config
from tests.conftest import Inbox
from tests.dags.conftest import REPO, run_dag

pytestmark = pytest.mark.rgw
NIGHT = "2026-03-11"
KMS = "aws:kms:testkey-1"  # Ceph 16.2 has SSE-KMS, not SSE-S3


@pytest.mark.parametrize("environment", ["wrong", "absent"])
def test_every_s3_request_of_the_night_is_signed_as_aws_default(
        rgw: tuple[str, str, str], airflow_home: Path, smtp_server: tuple[int, Inbox], tmp_path: Path,
        environment: str) -> None:
    """Whatever the worker's environment says of AWS: wrong credentials (pointing at the right store), or nothing
    at all (no credentials, region or endpoint): the connection alone decides."""
    endpoint, key, secret = rgw
    bucket = f"identity-{environment}"
    right = S3Identity(key, secret, None, "us-east-1", endpoint)
    client = boto3.client("s3", config=client_config(), **right.client_args())
    client.create_bucket(Bucket=bucket)
    local = tmp_path / "landing"
    generate(LocalStorage(local), GenerateOptions(start=date(2026, 3, 4), days=8, workspaces=3, events_per_day=80,
                                                  seed=3))
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        client.put_object(Bucket=bucket, Key=f"landing/{path.relative_to(local).as_posix()}", Body=path.read_bytes())
    stores = {"landing": f"s3://{bucket}/landing", "warehouse": f"s3://{bucket}/warehouse",
              "out": f"s3://{bucket}/out", "archive": f"s3://{bucket}/archive"}
    backfill(Settings(**stores, s3_sse=KMS, s3_identity=right), until=date.fromisoformat(NIGHT))
    recipients = tmp_path / "recipients.json"
    recipients.write_text(json.dumps({"1": ["ana@example.com"]}))

    port, inbox = smtp_server
    wrong = {"AWS_ACCESS_KEY_ID": "AKIAWRONGWRONGWRONG1", "AWS_SECRET_ACCESS_KEY": "wrong", "AWS_DEFAULT_REGION":
             "us-east-1", "AWS_ENDPOINT_URL": endpoint}  # the right store, but not who the connection says
    with pytest.raises(ClientError, match=r"InvalidAccessKeyId|SignatureDoesNotMatch|AccessDenied"):
        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=wrong["AWS_ACCESS_KEY_ID"],
                     aws_secret_access_key="wrong", region_name="us-east-1").list_objects_v2(Bucket=bucket)
    aws_default = {"conn_type": "aws", "login": key, "password": secret,
                   "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"}}
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, **(wrong if environment == "wrong"
                                                                                  else {}),
           "AIRFLOW_HOME": str(airflow_home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
           "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(aws_default),
           "AIRFLOW_CONN_SMTP_DEFAULT": json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": port,
                                                    **SMTP_PLAIN}),
           **{f"CONTACTS_REPORT_{name.upper()}": uri for name, uri in stores.items()},
           "CONTACTS_REPORT_S3_URI": f"s3://{bucket}/site", "CONTACTS_REPORT_S3_SSE": KMS,
           "CONTACTS_REPORT_RECIPIENTS": str(recipients), "NO_PROGRESS": "1"}
    result = run_dag(env, NIGHT)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    stored = {o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
              for o in page.get("Contents", [])}
    assert f"warehouse/_runs/ingest_date={NIGHT}.json" in stored  # ingest: landing read, warehouse written
    night_pages = {k for k in stored if k.startswith("out/") and k.endswith("/today.html")}
    assert len(night_pages) >= 3  # render: every workspace's report day (and late pages)
    assert {k.replace("out/", "site/", 1) for k in night_pages} <= stored  # publish
    assert any(k.startswith("archive/1/") and k.endswith("manifest.json") for k in stored)  # archive
    assert any(k.startswith("site/archive/1/") for k in stored)  # the archive's mirror
    # The e-mail's links are presigned by the same identity: they open the pages.
    (_, raw), = inbox.messages
    message = email.message_from_bytes(raw)
    text = next(p for p in message.walk() if p.get_content_type() == "text/plain").get_payload(decode=True).decode()
    links = re.findall(r"(http://\S+)", text)
    assert links
    for link in links[:2]:
        with urllib.request.urlopen(link) as response:
            assert response.status == 200 and response.headers["Content-Encoding"] == "gzip"
    assert secret not in repr(right) and secret not in result.stdout + result.stderr
