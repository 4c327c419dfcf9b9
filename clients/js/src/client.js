// A small client for the convergiod wire protocol (docs/protocol.md) over ZeroMQ + CURVE.
//
//   import { Client } from "convergio-client"
//   const client = await Client.fromConnectionFile("phone.convergio.json")
//   const stream = client.stream({ type: "ask", prompt: "Hello" })
//   for await (const event of stream) if (event.type === "token") process.stdout.write(event.text)
//   console.log(stream.result)   // the terminal result body
//   client.close()
//
// One DEALER socket; one MessagePack map per frame; frames are matched to requests by `id`.

import { readFile } from "node:fs/promises"
import { decode, encode } from "@msgpack/msgpack"
import { Dealer } from "zeromq"

export const PROTOCOL_VERSION = 1

/** A `failure` frame from the daemon: `code` is one of the protocol's error codes. */
export class RemoteError extends Error {
  constructor(code, message, retryAfter) {
    super(`${code}: ${message}`)
    this.name = "RemoteError"
    this.code = code
    this.retryAfter = retryAfter
  }
}

/** No frame arrived for a request within the client's timeout. */
export class ClientTimeout extends Error {
  constructor(seconds) {
    super(`no answer from the daemon within ${seconds} s`)
    this.name = "ClientTimeout"
  }
}

/** Read a connection file written by `convergio pair`. */
export async function loadConnection(path) {
  const conn = JSON.parse(await readFile(path, "utf8"))
  if (conn.format !== "convergio-connection") {
    throw new Error(`${path}: not a convergio connection file`)
  }
  for (const field of ["endpoint", "server_key", "public_key", "secret_key"]) {
    if (!conn[field]) throw new Error(`${path}: missing ${field}`)
  }
  return conn
}

/** The events of one request, then its result. Iterate it with `for await`. */
export class Stream {
  constructor(client, id, timeout) {
    this.id = id
    this.result = undefined
    this._client = client
    this._timeout = timeout
    this._queue = []
    this._waiter = null
    this._done = false
  }

  _push(msg) {
    if (this._waiter) {
      const resolve = this._waiter
      this._waiter = null
      resolve(msg)
    } else {
      this._queue.push(msg)
    }
  }

  _next() {
    if (this._queue.length) return Promise.resolve(this._queue.shift())
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._waiter = null
        reject(new ClientTimeout(this._timeout))
      }, this._timeout * 1000)
      this._waiter = (msg) => {
        clearTimeout(timer)
        resolve(msg)
      }
    })
  }

  async *[Symbol.asyncIterator]() {
    try {
      while (true) {
        const msg = await this._next()
        if (msg.type === "event") {
          yield msg.body
          continue
        }
        this._done = true
        if (msg.type === "failure") {
          throw new RemoteError(msg.code, msg.message, msg.retry_after)
        }
        this.result = msg.body
        return
      }
    } finally {
      if (!this._done) await this.cancel()
      this._client._pending.delete(this.id)
    }
  }

  /** Drain the events and return the result body. */
  async done() {
    for await (const _ of this) {
      // events are dropped
    }
    return this.result
  }

  /** Answer an `approval_request` event: "once", "always" or "deny". */
  async answer(approval, decision) {
    await this._client._send({ type: "approval", id: this.id, approval, decision })
  }

  /** Cancel the request; iterating on yields its `cancelled` failure. */
  async cancel() {
    await this._client._send({ type: "cancel", id: this.id })
  }
}

export class Client {
  /**
   * @param {object} conn a connection file's contents (see loadConnection)
   * @param {{timeout?: number}} options seconds to wait for each frame (default 10)
   */
  constructor(conn, { timeout = 10 } = {}) {
    this.timeout = timeout
    this._socket = new Dealer({
      linger: 0,
      curveServerKey: conn.server_key,
      curvePublicKey: conn.public_key,
      curveSecretKey: conn.secret_key,
    })
    this._socket.connect(conn.endpoint)
    this._pending = new Map()
    this._nextId = 1
    this._sending = Promise.resolve()
    this._reader = this._read()
  }

  static async fromConnectionFile(path, options) {
    return new Client(await loadConnection(path), options)
  }

  async _read() {
    try {
      for await (const [frame] of this._socket) {
        let msg
        try {
          msg = decode(frame)
        } catch {
          continue
        }
        const stream = this._pending.get(Number(msg.id))
        if (stream) stream._push(msg)
      }
    } catch (err) {
      if (!this._socket.closed) throw err
    }
  }

  _send(msg) {
    // zeromq.js allows one send at a time per socket: chain them.
    const next = this._sending.then(() => this._socket.send(encode(msg)))
    this._sending = next.catch(() => {})
    return next
  }

  /** Start a request; returns its Stream. `deadline`: seconds the daemon may spend. */
  stream(op, { deadline, timeout } = {}) {
    const id = this._nextId++
    const stream = new Stream(this, id, timeout ?? this.timeout)
    this._pending.set(id, stream)
    const request = { type: "request", id, op }
    if (deadline !== undefined) request.deadline = deadline
    this._send(request).catch((err) => stream._push({ type: "failure", id, code: "internal", message: String(err) }))
    return stream
  }

  /** Send `op` and return its result body (events are dropped). */
  async call(op, options) {
    return this.stream(op, options).done()
  }

  close() {
    this._socket.close()
  }
}
