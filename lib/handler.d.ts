import type { IncomingMessage } from 'node:http'
import type { NarrativeSessionStore } from '../index'

/** A message's data as the `ws` package delivers it. */
export type NarrativeSocketData = Buffer | ArrayBuffer | Buffer[]

/**
 * The socket the handler needs: a `ws` WebSocket (its types from @types/ws 8.5 to the current 8.x
 * are accepted as they are), or anything with these members.
 */
export interface NarrativeSocket {
  readonly readyState: number
  /** Bytes queued by `send` and not yet handed to the network; large restores wait for it to be 0. */
  readonly bufferedAmount: number
  /** Stops and restarts reading (the `ws` package has both): a client that does not read is not read from. */
  pause?(): void
  resume?(): void
  /** `done` is called once the kernel has taken the data, or with an error if the socket closed first. */
  send(data: string | Buffer, options?: { binary?: boolean; fin?: boolean }, done?: (err?: Error) => void): void
  close(code?: number, reason?: string): void
  on(event: 'message', listener: (data: NarrativeSocketData, isBinary: boolean) => void): unknown
  on(event: 'close', listener: (code: number, reason: Buffer) => void): unknown
  on(event: 'error', listener: (err: Error) => void): unknown
  off(event: 'message', listener: (data: NarrativeSocketData, isBinary: boolean) => void): unknown
}

export interface AttachOptions {
  store: NarrativeSessionStore
  /**
   * The host's own check of the upgrade request (its login cookie, a token), run before anything
   * is restored or accepted. Resolve to `true` to admit; anything else, or a throw, refuses the
   * connection: it closes with code 4401 and nothing is sent (`ready` rejects with `code: 'EAUTH'`
   * and the thrown error as `cause`). Runs after the Origin check and before `resolveUser`.
   */
  authenticate?: (req: IncomingMessage) => boolean | Promise<boolean>
  /**
   * Origins allowed besides the server's own, such as `['https://ide.example.com']`: by default a
   * request with an `Origin` header is refused (close code 4403, nothing sent) unless the Origin's
   * host is the request's host (`Forwarded: host=`, `X-Forwarded-Host`, else `Host`), as
   * code-server's `ensureOrigin` does; one without (not a browser) is let through. `['*']` allows
   * every origin: only for a host that checks the Origin itself before the upgrade.
   */
  allowedOrigins?: readonly string[]
  /**
   * The user of this connection, from the host's own authentication. Takes precedence over
   * `trustedUserHeader`. A user id sent by the browser is never used.
   */
  resolveUser?: (req: IncomingMessage) => string | Promise<string>
  /**
   * A header set by the auth proxy in front of the server (`x-forwarded-user`, `x-auth-request-user`).
   * Named only when such a proxy strips it from client requests. Without this or `resolveUser`,
   * the user is the OS account the server runs as.
   */
  trustedUserHeader?: string
  /** The workspace path; default: `?workspace=` or `?folder=` on the socket URL. It is normalised. */
  resolveWorkspace?: (req: IncomingMessage) => string
  /** Larger messages get an `ETOOLARGE` error. Default 1 MiB. */
  maxMessageBytes?: number
  /**
   * A message the client takes none of for this long closes the socket with code 1013 (a client
   * that does not read; see docs/protocol.md). Default 30 000 ms.
   */
  slowReaderTimeoutMs?: number
}

export interface NarrativeConnection {
  /** This connection's id: the `origin` of the merges it makes. */
  readonly id: string
  userId: string | undefined
  workspaceId: string | undefined
  /**
   * Settles once the session is restored and the `restored` event sent. Rejects (and the socket
   * closes) when the Origin is not allowed (`code: 'EORIGIN'`, close code 4403), when
   * `authenticate` refuses or no user identity is found (`code: 'EAUTH'`, close code 4401), with
   * nothing sent in either case, or when the session cannot be loaded (an `error` message, then
   * close code 1011).
   */
  readonly ready: Promise<{ userId: string; workspaceId: string; sessionId: string }>
  /**
   * After the socket closed: resolves once the session has been saved, with whether the save wrote
   * anything (`false` when there was nothing left to write, or the connection never had a session),
   * or with the error the save failed with. It never rejects.
   */
  saved?: Promise<boolean | Error>
}

/**
 * Serves the narrative session on one socket (see docs/protocol.md): restores it on connect,
 * merges `session-update` messages, tells the user's other connections about changes, and saves
 * on close. Other message types are left to the host's handler.
 */
export declare function attachNarrativeSession(
  ws: NarrativeSocket,
  req: IncomingMessage,
  options: AttachOptions,
): NarrativeConnection

/** Message types the handler takes; a host's own handler can skip these. */
export declare const SESSION_MESSAGE_TYPES: readonly string[]
