"""minio-init's work for the offline stack (docker/compose.stack.yaml): create the MLflow
artifact bucket on the S3 stand-in once (an existing bucket is fine), with boto3 from the
project image instead of MinIO's `mc`."""

import os
import sys

import boto3
from botocore.exceptions import ClientError

endpoint = os.environ.get("S3_ENDPOINT_URL", "http://minio:9000")
bucket = os.environ.get("MLFLOW_BUCKET", "mlflow")
s3 = boto3.client(
    "s3",
    endpoint_url=endpoint,
    aws_access_key_id=os.environ["MINIO_ROOT_USER"],
    aws_secret_access_key=os.environ["MINIO_ROOT_PASSWORD"],
    region_name="us-east-1",
)
try:
    s3.create_bucket(Bucket=bucket)
    print(f"created bucket {bucket} on {endpoint}")
except ClientError as exc:
    if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
        sys.exit(f"cannot create bucket {bucket} on {endpoint}: {exc}")
    print(f"bucket {bucket} exists on {endpoint}")
