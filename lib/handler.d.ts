import type { IncomingMessage } from 'node:http'
import type { NarrativeSessionStore } from '../index'

/** The socket the handler needs: what the `ws` package's WebSocket provides. */
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
  on(event: 'message', listener: (data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean) => void): unknown
  on(event: 'close' | 'error', listener: (...args: unknown[]) => void): unknown
  off(event: 'message', listener: (...args: never[]) => void): unknown
}

export interface AttachOptions {
  store: NarrativeSessionStore
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
   * closes) when there is no user identity (`code: 'EAUTH'`, close code 1008) or the session
   * cannot be loaded (close code 1011).
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
