#!/usr/bin/env node
// The `onceq` executable. In a repository checkout the build also holds dist/tools/cli.js, the
// product's commands plus the development tools (demo, bench, chaos), so the README's
// `npx onceq demo` works there; the published package and the Docker image ship dist/src only,
// where the product CLI answers those three with one line saying where they live.
// `npm run build` (run by `npm ci` through `prepare`) produces both.
import { existsSync } from 'node:fs';

const tools = new URL('../dist/tools/cli.js', import.meta.url);
const entry = existsSync(tools) ? tools.href : '../dist/src/cli/index.js';
import(entry).catch((err) => {
  if (err && err.code === 'ERR_MODULE_NOT_FOUND' && String(err.message).includes('dist/src/cli')) {
    console.error('onceq: the build is missing; run `npm run build` first');
    process.exit(1);
  }
  throw err;
});
