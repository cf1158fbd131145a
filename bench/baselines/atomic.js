'use strict'
// Baseline 2, "atomic": the npm package write-file-atomic plus JSON, as session-file-store does.
// A save writes the whole session to a temp file, fsyncs it and renames it over the old one;
// a load is readFile plus JSON.parse, as in the naive baseline.

const fsp = require('node:fs/promises')
const path = require('node:path')
const writeFileAtomic = require('write-file-atomic')

class AtomicStore {
  constructor(dir) {
    this.dir = dir
  }

  file(stem) {
    return path.join(this.dir, `${stem}.json`)
  }

  async load(stem) {
    return JSON.parse(await fsp.readFile(this.file(stem), 'utf8'))
  }

  async save(stem, session) {
    // Defaults: fsync on, mode kept; the promise form (no callback).
    await writeFileAtomic(this.file(stem), JSON.stringify(session))
  }
}

module.exports = { AtomicStore }
