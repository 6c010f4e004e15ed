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

// AWS Signature V4, checked against MinIO's root key pair (s3rver itself checks only the key id
// of a V4 request): in the Authorization header (boto3's signed requests) or in the query string
// (a presigned URL: MLflow downloads large artifacts in parallel chunks through presigned GETs).
// Anonymous and V2 requests are refused.
function parseQuery(query) {
  return query
    .split('&')
    .filter(Boolean)
    .map((kv) => {
      const i = kv.indexOf('=');
      const [k, v] = i < 0 ? [kv, ''] : [kv.slice(0, i), kv.slice(i + 1)];
      const dec = (x) => decodeURIComponent(x.replace(/\+/g, '%20'));
      return [dec(k), dec(v)];
    });
}

function canonicalQueryOf(pairs) {
  return pairs
    .map(([k, v]) => [rfc3986(k), rfc3986(v)])
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join('&');
}

// The parts a V4 signature covers, from the header or from a presigned URL's query; a string
// names what is wrong.
function v4Parts(ctx, path, pairs) {
  const auth = ctx.get('authorization');
  if (auth) {
    const m = /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, ?SignedHeaders=([^,]+), ?Signature=([0-9a-f]{64})$/.exec(auth);
    if (!m) return 'not an AWS4-HMAC-SHA256 Authorization header';
    const [, keyId, date, region, service, signedHeaders, signature] = m;
    return { keyId, date, region, service, signedHeaders, signature, amzDate: ctx.get('x-amz-date'),
      query: pairs, payloadHash: ctx.get('x-amz-content-sha256') || 'UNSIGNED-PAYLOAD' };
  }
  const q = Object.fromEntries(pairs);
  if (!q['X-Amz-Signature']) return 'anonymous access is not allowed';
  if (q['X-Amz-Algorithm'] !== 'AWS4-HMAC-SHA256') return 'not an AWS4-HMAC-SHA256 presigned URL';
  const m = /^([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request$/.exec(q['X-Amz-Credential'] || '');
  if (!m || !/^[0-9a-f]{64}$/.test(q['X-Amz-Signature'])) return 'malformed presigned URL';
  const [, keyId, date, region, service] = m;
  const amzDate = q['X-Amz-Date'] || '';
  const t = /^(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)Z$/.exec(amzDate);
  const expires = Number(q['X-Amz-Expires']);
  if (!t || !Number.isInteger(expires) || expires < 1 || expires > 604800) return 'malformed presigned URL';
  const signedAt = Date.UTC(+t[1], +t[2] - 1, +t[3], +t[4], +t[5], +t[6]);
  if (Date.now() > signedAt + expires * 1000) return 'presigned URL expired';
  return { keyId, date, region, service, signedHeaders: q['X-Amz-SignedHeaders'] || 'host',
    signature: q['X-Amz-Signature'], amzDate, query: pairs.filter(([k]) => k !== 'X-Amz-Signature'),
    payloadHash: 'UNSIGNED-PAYLOAD' };
}

function verifyV4(ctx) {
  const rawUrl = ctx.req.url;
  const qIndex = rawUrl.indexOf('?');
  const path = qIndex < 0 ? rawUrl : rawUrl.slice(0, qIndex);
  const pairs = parseQuery(qIndex < 0 ? '' : rawUrl.slice(qIndex + 1));
  const v4 = v4Parts(ctx, path, pairs);
  if (typeof v4 === 'string') return v4;
  const { keyId, date, region, service, signedHeaders, signature, amzDate, query, payloadHash } = v4;
  if (keyId !== user) return 'unknown access key';
  if (!amzDate.startsWith(date)) return 'x-amz-date does not match the credential scope';
  const names = signedHeaders.split(';');
  const canonicalHeaders = names
    .map((h) => `${h}:${String(ctx.req.headers[h] ?? '').trim().replace(/\s+/g, ' ')}\n`)
    .join('');
  const canonical = [ctx.method, path, canonicalQueryOf(query), canonicalHeaders, signedHeaders, payloadHash].join('\n');
  const scope = `${date}/${region}/${service}/aws4_request`;
  const toSign = ['AWS4-HMAC-SHA256', amzDate, scope, crypto.createHash('sha256').update(canonical).digest('hex')].join('\n');
  const key = hmac(hmac(hmac(hmac('AWS4' + password, date), region), service), 'aws4_request');
  const expected = crypto.createHmac('sha256', key).update(toSign).digest('hex');
  const ok = crypto.timingSafeEqual(Buffer.from(expected), Buffer.from(signature));
  return ok ? null : 'SignatureDoesNotMatch';
}

server.middleware.unshift(async (ctx, next) => {
  const problem = verifyV4(ctx);
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
