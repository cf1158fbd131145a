'use strict'
// Baseline 4, "ioredis": what connect-redis does with a session. A save is JSON.stringify of the
// whole session and one `SET key value EX ttl`; a load is `GET` plus JSON.parse. One ioredis client
// (its defaults: one connection, commands pipelined as they are issued), keys `<prefix><stem>`.
// No concurrency control: two instances saving one session at once lose one of the two updates.

const Redis = require('ioredis')

const TTL_SECONDS = 30 * 86_400

class IoredisStore {
  constructor(url, prefix) {
    this.redis = new Redis(url, { lazyConnect: true })
    this.prefix = prefix
  }

  async connect() {
    await this.redis.connect()
    return this
  }

  key(stem) {
    return `${this.prefix}${stem}`
  }

  async load(stem) {
    const text = await this.redis.get(this.key(stem))
    return text == null ? null : JSON.parse(text)
  }

  async save(stem, session) {
    await this.redis.set(this.key(stem), JSON.stringify(session), 'EX', TTL_SECONDS)
  }

  async close() {
    await this.redis.quit()
  }
}

module.exports = { IoredisStore, TTL_SECONDS }
