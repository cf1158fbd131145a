#!/usr/bin/env node
'use strict'
// The operator's command for narrative sessions: `mia-sessions --help` lists every command, and
// docs/operating.md says what each one does and promises.
require('../lib/cli/main').main(process.argv).then((code) => {
  process.exitCode = code
})
