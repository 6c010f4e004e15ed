// S3 on the file system for the offline stack: MinIO's root credentials are the one key pair,
// every request must be signed with them (AWS Signature V4).
'use strict';
const crypto = require('crypto');
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
const server = new S3rver({ address: '0.0.0.0', port: 9000, directory: '/data', silent: false, vhostBuckets: false });

function deny(ctx, code, message) {
  ctx.status = 403;
  ctx.type = 'application/xml';
  ctx.body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message></Error>`;
}

const hmac = (key, data) => crypto.createHmac('sha256', key).update(data, 'utf8').digest();
const rfc3986 = (s) => encodeURIComponent(s).replace(/[!'()*]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase());

// AWS Signature V4 in the Authorization header, checked against MinIO's root key pair
// (s3rver itself checks only the key id of a V4 request). Anonymous and V2/presigned requests
// are refused: MLflow (boto3) signs every request with V4 headers.
function verifyV4(ctx) {
  const auth = ctx.get('authorization');
  const m = /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, ?SignedHeaders=([^,]+), ?Signature=([0-9a-f]{64})$/.exec(auth);
  if (!m) return 'not an AWS4-HMAC-SHA256 Authorization header';
  const [, keyId, date, region, service, signedHeaders, signature] = m;
  if (keyId !== user) return 'unknown access key';
  const amzDate = ctx.get('x-amz-date');
  if (!amzDate.startsWith(date)) return 'x-amz-date does not match the credential scope';
  const rawUrl = ctx.req.url;
  const qIndex = rawUrl.indexOf('?');
  const path = qIndex < 0 ? rawUrl : rawUrl.slice(0, qIndex);
  const query = qIndex < 0 ? '' : rawUrl.slice(qIndex + 1);
  const canonicalQuery = query
    .split('&')
    .filter(Boolean)
    .map((kv) => {
      const i = kv.indexOf('=');
      const [k, v] = i < 0 ? [kv, ''] : [kv.slice(0, i), kv.slice(i + 1)];
      const dec = (s) => decodeURIComponent(s.replace(/\+/g, '%20'));
      return [rfc3986(dec(k)), rfc3986(dec(v))];
    })
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join('&');
  const names = signedHeaders.split(';');
  const canonicalHeaders = names
    .map((h) => `${h}:${String(ctx.req.headers[h] ?? '').trim().replace(/\s+/g, ' ')}\n`)
    .join('');
  const payloadHash = ctx.get('x-amz-content-sha256') || 'UNSIGNED-PAYLOAD';
  const canonical = [ctx.method, path, canonicalQuery, canonicalHeaders, signedHeaders, payloadHash].join('\n');
  const scope = `${date}/${region}/${service}/aws4_request`;
  const toSign = ['AWS4-HMAC-SHA256', amzDate, scope, crypto.createHash('sha256').update(canonical).digest('hex')].join('\n');
  const key = hmac(hmac(hmac(hmac('AWS4' + password, date), region), service), 'aws4_request');
  const expected = crypto.createHmac('sha256', key).update(toSign).digest('hex');
  const ok = crypto.timingSafeEqual(Buffer.from(expected), Buffer.from(signature));
  return ok ? null : 'SignatureDoesNotMatch';
}

server.middleware.unshift(async (ctx, next) => {
  const problem = ctx.get('authorization') ? verifyV4(ctx) : 'anonymous access is not allowed';
  if (problem === null) return next();
  console.error(`refused ${ctx.method} ${ctx.path}: ${problem}`);
  return deny(ctx, problem === 'SignatureDoesNotMatch' ? problem : 'AccessDenied', problem);
});

server
  .run()
  .then(() => console.log('s3 stand-in listening on :9000, data in /data'))
  .catch((err) => {
    console.error(err);
    process.exit(1);
  });
