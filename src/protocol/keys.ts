/**
 * CURVE keys for the worker link (`coordinator keygen --out DIR`, `--keys DIR`).
 *
 * A key directory holds two key pairs as Z85 text files:
 *   coordinator.public  coordinator.secret   the coordinator's (server) pair
 *   worker.public       worker.secret        the pair every worker presents
 * The coordinator admits only worker keys on its allow-list: worker.public, plus any
 * `*.public` file under DIR/allowed/. A worker made by another keygen holds another
 * coordinator.public and another worker pair, so its handshake fails both ways.
 */
import { chmodSync, existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { curveKeyPair } from 'zeromq';
import { UserError } from '../util/errors.js';
import { makeDirs } from '../util/fs.js';

export interface KeyPair {
  publicKey: string;
  secretKey: string;
}

export interface CoordinatorKeys {
  server: KeyPair;
  /** Z85 public keys of the workers admitted. */
  allowed: string[];
}

export interface WorkerKeys {
  client: KeyPair;
  serverPublicKey: string;
}

const Z85_KEY = /^[0-9a-zA-Z.\-:+=^!/*?&<>()[\]{}@%$#]{40}$/;

function readKey(dir: string, file: string): string {
  const path = join(dir, file);
  let text: string;
  try {
    text = readFileSync(path, 'utf8').trim();
  } catch (e) {
    throw new UserError(`--keys ${dir}: cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  if (!Z85_KEY.test(text)) throw new UserError(`--keys ${dir}: ${file} is not a Z85-encoded CURVE key`);
  return text;
}

/** Makes both key pairs in `dir`; refuses to replace existing keys (running workers hold them). */
export function generateKeys(dir: string, force = false): { files: string[] } {
  const files = ['coordinator.public', 'coordinator.secret', 'worker.public', 'worker.secret'];
  if (!force) {
    const existing = files.filter((f) => existsSync(join(dir, f)));
    if (existing.length > 0) throw new UserError(`${dir} already holds keys (${existing.join(', ')}); use --force to replace them`);
  }
  try {
    makeDirs(dir, 0o700);
    const coordinator = curveKeyPair();
    const worker = curveKeyPair();
    const write = (file: string, key: string, mode: number): void => {
      writeFileSync(join(dir, file), `${key}\n`, { mode });
      chmodSync(join(dir, file), mode);
    };
    write('coordinator.public', coordinator.publicKey, 0o644);
    write('coordinator.secret', coordinator.secretKey, 0o600);
    write('worker.public', worker.publicKey, 0o644);
    write('worker.secret', worker.secretKey, 0o600);
  } catch (e) {
    if (e instanceof UserError) throw e;
    throw new UserError(`keygen --out ${dir}: cannot write there (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  return { files: files.map((f) => join(dir, f)) };
}

export function loadCoordinatorKeys(dir: string): CoordinatorKeys {
  const allowed = [readKey(dir, 'worker.public')];
  const extra = join(dir, 'allowed');
  if (existsSync(extra)) {
    for (const f of readdirSync(extra).filter((n) => n.endsWith('.public')).sort()) allowed.push(readKey(extra, f));
  }
  return { server: { publicKey: readKey(dir, 'coordinator.public'), secretKey: readKey(dir, 'coordinator.secret') }, allowed };
}

export function loadWorkerKeys(dir: string): WorkerKeys {
  return {
    client: { publicKey: readKey(dir, 'worker.public'), secretKey: readKey(dir, 'worker.secret') },
    serverPublicKey: readKey(dir, 'coordinator.public'),
  };
}

const Z85_ALPHABET = '0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#';

/** Z85 (ZeroMQ RFC 32) encoding of a 32-byte key, as ZAP hands keys over raw. */
export function z85Encode(bytes: Uint8Array): string {
  let out = '';
  for (let i = 0; i < bytes.length; i += 4) {
    let value = ((bytes[i] << 24) | (bytes[i + 1] << 16) | (bytes[i + 2] << 8) | bytes[i + 3]) >>> 0;
    let chunk = '';
    for (let j = 0; j < 5; j++) {
      chunk = Z85_ALPHABET[value % 85] + chunk;
      value = Math.floor(value / 85);
    }
    out += chunk;
  }
  return out;
}
