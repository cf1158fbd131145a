'use strict'
// Baseline 1, "naive": what code-server does with its own settings file. A save is
// JSON.stringify plus fs.promises.writeFile of the whole session; a load is readFile plus
// JSON.parse. No temp file, no fsync: a crash mid-write can leave a torn file.

const fsp = require('node:fs/promises')
const path = require('node:path')

class NaiveStore {
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
    await fsp.writeFile(this.file(stem), JSON.stringify(session))
  }
}

module.exports = { NaiveStore }
