'use strict'
// Baseline 2, "atomic": the npm package write-file-atomic plus JSON, as session-file-store does.
// A save writes the whole session to a temp file, fsyncs it and renames it over the old one;
// a load is readFile plus JSON.parse, as in the naive baseline.

const writeFileAtomic = require('write-file-atomic')
const { NaiveStore } = require('./naive')

class AtomicStore extends NaiveStore {
  async save(stem, session) {
    // Defaults: fsync on, mode kept; the promise form (no callback).
    await writeFileAtomic(this.file(stem), JSON.stringify(session))
  }
}

module.exports = { AtomicStore }
