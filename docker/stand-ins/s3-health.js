// Health: the server answers an S3 request (ListBuckets) with an S3 XML document.
'use strict';
require('http')
  .get('http://127.0.0.1:9000/', (res) => {
    let body = '';
    res.on('data', (chunk) => (body += chunk));
    res.on('end', () => process.exit(body.includes('<?xml') ? 0 : 1));
  })
  .on('error', () => process.exit(1))
  .setTimeout(4000, () => process.exit(1));
