/**
 * CURVE keys for the worker link (`coordinator keygen --out DIR`, `--keys DIR`).
 *
 * A key directory holds two key pairs as Z85 text files:
 *   coordinator.public  coordinator.secret   the coordinator's (server) pair
 *   worker.public       worker.secret        the shared pair every worker may present
 * and, made by `keygen --out DIR --worker NAME`, one pair per named worker:
 *   allowed/NAME.public                      NAME's public key: its entry on the allow-list
 *   workers/NAME/                            NAME's own --keys folder: coordinator.public,
 *                                            worker.public, worker.secret (its pair), worker.name
 * The coordinator admits the shared worker.public (while that file is in DIR) and every
 * allowed/NAME.public, reading the folder again at every handshake: removing allowed/NAME.public
 * revokes NAME. A worker made by another keygen holds another coordinator.public and another
 * worker pair, so its handshake fails both ways.
 *
 * A named worker proves its name in its hello (see `helloProof`): zeromq.js does not hand the
 * application the key a connection authenticated with, so the name must be proven in the message.
 */
import { chmodSync, existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { createHmac, createPrivateKey, createPublicKey, diffieHellman, timingSafeEqual } from 'node:crypto';
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
  /** The key folder: its allow-list is read again at every handshake and hello (revocation). */
  dir: string;
}

/** The worker keys admitted now: public key (Z85) → the worker's name, or undefined for the shared pair. */
export type AllowList = ReadonlyMap<string, string | undefined>;

/** A worker's name, as `keygen --worker NAME` takes it: a file name and a log field. */
export const WORKER_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
export interface WorkerKeys {
  client: KeyPair;
  serverPublicKey: string;
  /** The worker's own name, for a pair made by `keygen --worker NAME` (absent for the shared pair). */
  name?: string;
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

/**
 * Makes NAME's own key pair in `dir` (which `keygen` made): its allow-list entry
 * `allowed/NAME.public`, and `workers/NAME/`, the folder its worker reads with --keys.
 */
export function generateWorkerKey(dir: string, name: string, force = false): { files: string[] } {
  if (!WORKER_NAME.test(name)) throw new UserError(`--worker ${name}: a name is 1 to 63 letters, digits, '.', '_' or '-', beginning with a letter or digit`);
  if (!existsSync(join(dir, 'coordinator.public'))) throw new UserError(`--worker ${name}: ${dir} holds no coordinator keys; run keygen --out ${dir} first`);
  const coordinatorPublic = readKey(dir, 'coordinator.public');
  const entry = join(dir, 'allowed', `${name}.public`);
  const own = join(dir, 'workers', name);
  if (!force && (existsSync(entry) || existsSync(join(own, 'worker.secret')))) {
    throw new UserError(`${dir} already holds keys for worker ${name}; use --force to replace them`);
  }
  try {
    makeDirs(join(dir, 'allowed'), 0o700);
    makeDirs(own, 0o700);
    const pair = curveKeyPair();
    const write = (path: string, text: string, mode: number): void => {
      writeFileSync(path, `${text}\n`, { mode });
      chmodSync(path, mode);
    };
    write(join(own, 'coordinator.public'), coordinatorPublic, 0o644);
    write(join(own, 'worker.public'), pair.publicKey, 0o644);
    write(join(own, 'worker.secret'), pair.secretKey, 0o600);
    write(join(own, 'worker.name'), name, 0o644);
    // Last: the key is admitted only once its worker's folder is complete.
    write(entry, pair.publicKey, 0o644);
  } catch (e) {
    throw new UserError(`keygen --out ${dir} --worker ${name}: cannot write there (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  return { files: [entry, join(own, 'coordinator.public'), join(own, 'worker.public'), join(own, 'worker.secret'), join(own, 'worker.name')] };
}

/** The worker keys `dir` admits now (read afresh: a removed entry is revoked at once). */
export function readAllowList(dir: string): AllowList {
  const allowed = new Map<string, string | undefined>();
  const extra = join(dir, 'allowed');
  let names: string[] = [];
  try {
    names = readdirSync(extra).filter((n) => n.endsWith('.public')).sort();
  } catch {
    // no allowed/ folder: the shared pair only
  }
  for (const f of names) {
    try {
      allowed.set(readKey(extra, f), f.slice(0, -'.public'.length));
    } catch {
      // unreadable or not a key (being written, or removed meanwhile): not admitted
    }
  }
  // The shared pair, while its public key is in the folder (removing it admits named workers only).
  if (existsSync(join(dir, 'worker.public'))) {
    try {
      allowed.set(readKey(dir, 'worker.public'), undefined);
    } catch {
      // as above
    }
  }
  return allowed;
}

export function loadCoordinatorKeys(dir: string): CoordinatorKeys {
  const keys = { server: { publicKey: readKey(dir, 'coordinator.public'), secretKey: readKey(dir, 'coordinator.secret') }, dir };
  if (!existsSync(join(dir, 'worker.public'))) {
    if (readAllowList(dir).size === 0) throw new UserError(`--keys ${dir}: no worker key to admit (neither worker.public nor allowed/*.public)`);
  } else readKey(dir, 'worker.public'); // says what is wrong with it now rather than refusing every worker
  return keys;
}

export function loadWorkerKeys(dir: string): WorkerKeys {
  const keys: WorkerKeys = {
    client: { publicKey: readKey(dir, 'worker.public'), secretKey: readKey(dir, 'worker.secret') },
    serverPublicKey: readKey(dir, 'coordinator.public'),
  };
  if (existsSync(join(dir, 'worker.name'))) {
    const name = readFileSync(join(dir, 'worker.name'), 'utf8').trim();
    if (!WORKER_NAME.test(name)) throw new UserError(`--keys ${dir}: worker.name is not a worker name`);
    keys.name = name;
  }
  return keys;
}

/** A Curve25519 key (Z85) as node:crypto takes it. */
function x25519Key(z85: string, secret: boolean, publicZ85?: string) {
  const b64 = (k: string): string => Buffer.from(z85Decode(k)).toString('base64url');
  const jwk = { kty: 'OKP', crv: 'X25519', x: b64(publicZ85 ?? z85), ...(secret ? { d: b64(z85) } : {}) };
  return secret ? createPrivateKey({ key: jwk, format: 'jwk' }) : createPublicKey({ key: jwk, format: 'jwk' });
}

/**
 * The proof a named worker puts in its hello: HMAC-SHA256, keyed with the Curve25519 shared secret
 * of its pair and the coordinator's, of its name and routing id. Only a holder of the worker's
 * secret (or of the coordinator's) can make it, so a worker admitted under one key cannot claim
 * another's name; the routing id in it keeps it from being used on another connection. It travels
 * inside the CURVE-encrypted link.
 */
export function helloProof(workerSecret: string, workerPublic: string, coordinatorPublic: string, name: string, routingId: string): string {
  const shared = diffieHellman({ privateKey: x25519Key(workerSecret, true, workerPublic), publicKey: x25519Key(coordinatorPublic, false) });
  return proofOf(shared, name, routingId);
}

/** The coordinator's check of a hello's proof, against the key `name` has on the allow-list now. */
export function checkHelloProof(server: KeyPair, workerPublic: string, name: string, routingId: string, proof: string): boolean {
  const shared = diffieHellman({ privateKey: x25519Key(server.secretKey, true, server.publicKey), publicKey: x25519Key(workerPublic, false) });
  const expected = Buffer.from(proofOf(shared, name, routingId), 'hex');
  const given = Buffer.from(proof, 'hex');
  return given.length === expected.length && timingSafeEqual(given, expected);
}

/**
 * Who a hello is from, as the coordinator's keys tell: `keyName` for a worker that proved it holds
 * the pair of an allow-list entry, none for the shared pair (admitted only while worker.public is in
 * the folder), or why it is refused. The allow-list is read afresh: a revoked name is refused at once.
 */
export function identifyWorker(keys: CoordinatorKeys, hello: { keyName?: string; keyProof?: string }, routingId: string): { keyName?: string } | { refused: string } {
  const allowList = readAllowList(keys.dir);
  if (hello.keyName === undefined) {
    if ([...allowList.values()].includes(undefined)) return {};
    return { refused: 'this coordinator admits only workers with their own keys (coordinator keygen --worker NAME), and this one named none' };
  }
  const entry = [...allowList].find(([, name]) => name === hello.keyName);
  if (!entry) return { refused: `key ${hello.keyName} is not on the allow-list (revoked, or never added)` };
  if (!hello.keyProof || !checkHelloProof(keys.server, entry[0], hello.keyName, routingId, hello.keyProof)) {
    return { refused: `this worker does not hold the key of ${hello.keyName}` };
  }
  return { keyName: hello.keyName };
}

function proofOf(shared: Buffer, name: string, routingId: string): string {
  return createHmac('sha256', shared).update(`mnist-ddp worker ${name} ${routingId}`).digest('hex');
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

/** Z85 (ZeroMQ RFC 32) decoding of a 40-character key into its 32 bytes. */
export function z85Decode(text: string): Uint8Array {
  const out = new Uint8Array((text.length / 5) * 4);
  for (let i = 0, o = 0; i < text.length; i += 5, o += 4) {
    let value = 0;
    for (let j = 0; j < 5; j++) value = value * 85 + Z85_ALPHABET.indexOf(text[i + j]);
    out[o] = (value >>> 24) & 0xff;
    out[o + 1] = (value >>> 16) & 0xff;
    out[o + 2] = (value >>> 8) & 0xff;
    out[o + 3] = value & 0xff;
  }
  return out;
}
