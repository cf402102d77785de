/**
 * ZAP handler (ZeroMQ RFC 27): the coordinator's gatekeeper when --keys is on. libzmq asks it
 * about every CURVE handshake on inproc://zeromq.zap.01; it admits a client only if its public
 * key is on the allow-list, which it reads afresh for every handshake (a revoked key is refused
 * from the next connection on). With `zapEnforceDomain` on the server socket, no handler means no entry.
 */
import { Reply } from 'zeromq';
import { type AllowList, z85Encode } from '../protocol/keys.js';
import type { Logger } from '../util/logger.js';

export const ZAP_ENDPOINT = 'inproc://zeromq.zap.01';
export const ZAP_DOMAIN = 'mnist-ddp';

export interface ZapHandler {
  /** Handshakes refused so far. */
  refused(): number;
  close(): void;
}

export async function startZapHandler(allowList: () => AllowList, logger: Logger): Promise<ZapHandler> {
  const socket = new Reply({ linger: 0 });
  await socket.bind(ZAP_ENDPOINT);
  let refused = 0;
  void (async () => {
    try {
      for await (const frames of socket) {
        const [version, requestId, domain, address, , mechanism, credentials] = frames;
        const key = credentials && credentials.length === 32 ? z85Encode(credentials) : undefined;
        const ok = mechanism?.toString() === 'CURVE' && domain?.toString() === ZAP_DOMAIN && key !== undefined && allowList().has(key);
        if (!ok) {
          refused++;
          logger.warn(
            { address: address?.toString(), key },
            `refused a worker from ${address?.toString() ?? '?'}: its key is not on the allow-list (keys from another keygen?)`,
          );
        }
        await socket.send([version ?? '1.0', requestId ?? '', ok ? '200' : '400', ok ? 'OK' : 'key not allowed', ok ? 'worker' : '', '']);
      }
    } catch {
      // closed
    }
  })();
  return { refused: () => refused, close: () => socket.close() };
}
