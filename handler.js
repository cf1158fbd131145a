'use strict'
// `mia-narrative-session/handler` for resolvers that ignore package.json `exports`, such as
// TypeScript's `moduleResolution: "node"`: the same module as `exports["./handler"]`.
module.exports = require('./lib/handler.js')
