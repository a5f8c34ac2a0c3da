#!/usr/bin/env node
// The published entry point runs the compiled CLI; `npm run build` (run by `npm ci` through
// `prepare`) produces it.
import('../dist/src/cli/index.js').catch((err) => {
  if (err && err.code === 'ERR_MODULE_NOT_FOUND' && String(err.message).includes('dist/src/cli')) {
    console.error('onceq: the build is missing; run `npm run build` first');
    process.exit(1);
  }
  throw err;
});
