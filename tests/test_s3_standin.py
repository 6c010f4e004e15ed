"""The offline stack's S3 stand-in (docker/stand-ins/s3-server.js, MinIO's place in `make
stack-smoke`) checks AWS Signature V4 in the header and in presigned URLs, as MinIO does: MLflow
downloads large artifacts in chunks through presigned GETs. Runs the script itself under node
with s3rver from the npm registry (skipped where node/npm or the registry are missing)."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[1]
USER, PASSWORD = "stack-admin", "stack-secret-1"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory):
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("node and npm are needed to run the S3 stand-in")
    work = tmp_path_factory.mktemp("s3-standin")
    proc = subprocess.run(
        ["npm", "install", "--omit=dev", "--no-audit", "--no-fund", "s3rver@3.7.1"],
        cwd=work, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.skip(f"s3rver could not be installed from the npm registry: {proc.stderr[-300:]}")
    script = (ROOT / "docker" / "stand-ins" / "s3-server.js").read_text()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # the image's fixed port and data folder, moved for a test on a shared host
    # (inside its container it listens on every address; here on 127.0.0.1 only)
    script = (
        script.replace("port: 9000", f"port: {port}")
        .replace("directory: '/data'", f"directory: '{work / 'data'}'")
        .replace("address: '0.0.0.0'", "address: '127.0.0.1'")
    )
    assert str(port) in script and str(work / "data") in script and "0.0.0.0" not in script
    (work / "s3-server.js").write_text(script)
    (work / "data").mkdir()
    log = (work / "server.log").open("w")
    server = subprocess.Popen(
        ["node", "s3-server.js"], cwd=work, stdout=log, stderr=subprocess.STDOUT,
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", "MINIO_ROOT_USER": USER, "MINIO_ROOT_PASSWORD": PASSWORD},
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"the S3 stand-in did not listen: {(work / 'server.log').read_text()[-2000:]}")
            time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
    server.terminate()
    server.wait(timeout=10)


def _client(url: str, secret: str = PASSWORD):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=url, aws_access_key_id=USER, aws_secret_access_key=secret, region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )  # fmt: skip


def test_signed_and_presigned_requests_pass_and_nothing_else(s3):
    pytest.importorskip("boto3")
    c = _client(s3)
    c.create_bucket(Bucket="mlflow")
    body = bytes(range(256)) * 400
    c.put_object(Bucket="mlflow", Key="1/run/artifacts/weights/best.pt", Body=body)
    assert c.get_object(Bucket="mlflow", Key="1/run/artifacts/weights/best.pt")["Body"].read() == body
    params = {"Bucket": "mlflow", "Key": "1/run/artifacts/weights/best.pt"}
    url = c.generate_presigned_url("get_object", Params=params, ExpiresIn=60)
    chunk = requests.get(url, headers={"Range": "bytes=256-511"}, timeout=10)  # as MLflow's chunked download
    assert chunk.status_code == 206 and chunk.content == body[256:512]

    signature = re.search(r"X-Amz-Signature=([0-9a-f]{64})", url).group(1)
    tampered = url.replace(signature, ("0" if signature[0] != "0" else "1") + signature[1:])
    wrong_key = _client(s3, "not-the-secret").generate_presigned_url("get_object", Params=params, ExpiresIn=60)
    expired = re.sub(r"X-Amz-Date=\d{8}T\d{6}Z", "X-Amz-Date=20200101T000000Z", url)
    anonymous = f"{s3}/mlflow/1/run/artifacts/weights/best.pt"
    for bad, why in ((tampered, "SignatureDoesNotMatch"), (wrong_key, "SignatureDoesNotMatch"),
                     (expired, "presigned URL expired"), (anonymous, "anonymous access is not allowed")):  # fmt: skip
        r = requests.get(bad, timeout=10)
        assert r.status_code == 403 and why in r.text, (bad, r.status_code, r.text[:300])
