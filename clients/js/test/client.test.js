// Runs against a real daemon over tcp + CURVE: tests/test_remote_js.py starts one, pairs a
// client and passes the connection file in CONVERGIO_CONNECTION.
import assert from "node:assert/strict"
import { after, before, test } from "node:test"
import { Client, RemoteError } from "../src/client.js"

const connection = process.env.CONVERGIO_CONNECTION
const skip = connection ? false : "CONVERGIO_CONNECTION is not set (run through pytest)"
let client

before(async () => {
  if (!skip) client = await Client.fromConnectionFile(connection, { timeout: 20 })
})
after(() => client?.close())

test("ping answers with the protocol version", { skip }, async () => {
  const pong = await client.call({ type: "ping" })
  assert.equal(pong.type, "pong")
  assert.equal(pong.protocol, 1)
})

test("status says who the connection is", { skip }, async () => {
  const status = await client.call({ type: "status" })
  assert.equal(status.tenant, process.env.CONVERGIO_TENANT)
  assert.equal(status.role, "user")
})

test("ping with count streams ticks in order, then the pong", { skip }, async () => {
  const stream = client.stream({ type: "ping", count: 5, interval: 0.01 })
  const ticks = []
  for await (const event of stream) ticks.push(event.n)
  assert.deepEqual(ticks, [1, 2, 3, 4, 5])
  assert.equal(stream.result.type, "pong")
})

test("ask streams an answer token by token", { skip }, async () => {
  const stream = client.stream({ type: "ask", prompt: "Say hello" })
  let text = ""
  for await (const event of stream) if (event.type === "token") text += event.text
  assert.equal(stream.result.type, "answer")
  assert.ok(text.length > 0, "no token events")
  assert.equal(stream.result.text, text)
})

test("cancel ends a stream with a cancelled failure", { skip }, async () => {
  const stream = client.stream({ type: "ping", count: 1000, interval: 0.02 })
  let seen = 0
  await assert.rejects(
    (async () => {
      for await (const _ of stream) {
        seen += 1
        if (seen === 2) await stream.cancel()
      }
    })(),
    (err) => err instanceof RemoteError && err.code === "cancelled",
  )
  assert.ok(seen >= 2 && seen < 1000)
})

test("admin ops are refused to a user client", { skip }, async () => {
  await assert.rejects(client.call({ type: "tenant.list" }), (err) => err.code === "forbidden")
})
