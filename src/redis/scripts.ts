/**
 * Loads the Lua scripts of `lua/` into a connection with `defineCommand` (once per connection,
 * as BullMQ does). A file `name-N.lua` declares N keys; it becomes the command `onceq:name`.
 * Callers go through {@link runScript} and never spell EVALSHA themselves.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import type { RedisClient } from './connection.js';

/** Lua scripts live beside the TypeScript sources; the build copies them (see package.json). */
export const LUA_DIR = fileURLToPath(new URL('./lua/', import.meta.url));

interface ScriptFile {
  command: string;
  numberOfKeys: number;
  lua: string;
}

let cache: Map<string, ScriptFile> | undefined;

function scriptFiles(): Map<string, ScriptFile> {
  if (cache) return cache;
  cache = new Map();
  for (const file of readdirSync(LUA_DIR)) {
    const match = /^([a-z0-9-]+)-(\d+)\.lua$/.exec(file);
    if (!match) continue;
    const [, name, keys] = match as unknown as [string, string, string];
    cache.set(name, {
      command: `onceq_${name.replace(/-/g, '_')}`,
      numberOfKeys: Number(keys),
      lua: readFileSync(path.join(LUA_DIR, file), 'utf8'),
    });
  }
  return cache;
}

const loaded = new WeakSet<RedisClient>();

/** Defines every script on this connection (idempotent). */
export function loadScripts(redis: RedisClient): void {
  if (loaded.has(redis)) return;
  for (const script of scriptFiles().values()) {
    redis.defineCommand(script.command, { lua: script.lua, numberOfKeys: script.numberOfKeys });
  }
  loaded.add(redis);
}

/** Runs script `name` (the file name without `-N.lua`) with its keys and arguments. */
export async function runScript(
  redis: RedisClient,
  name: string,
  keys: string[],
  args: (string | number)[],
): Promise<unknown> {
  const script = scriptFiles().get(name);
  if (!script) throw new Error(`no Lua script named ${name} in ${LUA_DIR}`);
  if (keys.length !== script.numberOfKeys) {
    throw new Error(`script ${name} takes ${script.numberOfKeys} keys, got ${keys.length}`);
  }
  loadScripts(redis);
  const command = (
    redis as unknown as Record<string, (...a: (string | number)[]) => Promise<unknown>>
  )[script.command];
  if (!command) throw new Error(`script ${name} is not defined on this connection`);
  for (let attempt = 1; ; attempt++) {
    try {
      return await command.call(redis, ...keys, ...args);
    } catch (err) {
      // NOSCRIPT means the script did not run, so another call is safe. ioredis resends the
      // script once on NOSCRIPT, but the resend can meet it again: a cache flushed again, or,
      // on a cluster, a node restarted empty whose first EVAL was refused before it ran
      // (CLUSTERDOWN, TRYAGAIN) while ioredis already counted the script as loaded there.
      if (attempt >= NOSCRIPT_ATTEMPTS || !isNoScript(err)) throw err;
    }
  }
}

/** Calls of a script before a NOSCRIPT is let through (each meets a fresh EVAL path). */
const NOSCRIPT_ATTEMPTS = 5;

function isNoScript(err: unknown): boolean {
  return err instanceof Error && err.message.startsWith('NOSCRIPT');
}
