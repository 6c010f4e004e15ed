// S3 on the file system for the offline stack: MinIO's root credentials are the one key pair.
'use strict';
const S3rver = require('s3rver');
const { DUMMY_ACCOUNT } = require('s3rver/lib/models/account');

const user = process.env.MINIO_ROOT_USER;
const password = process.env.MINIO_ROOT_PASSWORD;
if (!user || !password) {
  console.error('set MINIO_ROOT_USER and MINIO_ROOT_PASSWORD');
  process.exit(2);
}
DUMMY_ACCOUNT.revokeAccessKey('S3RVER');
DUMMY_ACCOUNT.createKeyPair(user, password);
new S3rver({ address: '0.0.0.0', port: 9000, directory: '/data', silent: false, vhostBuckets: false })
  .run()
  .then(() => console.log('s3 stand-in listening on :9000, data in /data'))
  .catch((err) => {
    console.error(err);
    process.exit(1);
  });
