'use strict'
// Mounts the fork's compiled narrative module in a scratch copy of stock code-server's out/node, the
// way the patched fork does it (test-in-host.sh): its src/node/routes/index.ts calls
// mountNarrativeRoutes(app, dispatcher, modules) before the VS Code routes and awaits the result's
// dispose() in disposeRoutes; its src/node/main.ts awaits disposeRoutes(). Each edit must match
// code-server's compiled file exactly once, or this fails.
//
//   node mount-in-code-server.js <code-server>/out/node

const fs = require('node:fs')
const path = require('node:path')

const outNode = process.argv[2]
if (!outNode) throw new Error('usage: node mount-in-code-server.js <code-server>/out/node')

function edit(file, replacements) {
  const full = path.join(outNode, file)
  let text = fs.readFileSync(full, 'utf8')
  for (const [from, to] of replacements) {
    const count = text.split(from).length - 1
    if (count !== 1) throw new Error(`${file}: expected ${JSON.stringify(from)} once, found it ${count} times`)
    text = text.replace(from, to)
  }
  fs.writeFileSync(full, text)
  console.log(`edited out/node/${file}`)
}

edit('routes/index.js', [
  [
    '    // For historic reasons we also load at /vscode',
    [
      '    // mia-code-server: the narrative module, mounted as its src/node/routes/index.ts mounts it.',
      '    const miaThreeUniverse = require("../mia/three-universe");',
      '    const narrative = require("../mia/narrative").mountNarrativeRoutes(app, new miaThreeUniverse.UniverseDispatcher([',
      '        new miaThreeUniverse.EngineerLens(), new miaThreeUniverse.CeremonyLens(), new miaThreeUniverse.StoryLens(),',
      '    ]), [{ name: "three-universe", version: "1.0.0", status: "ok" }]);',
      '    // For historic reasons we also load at /vscode',
    ].join('\n'),
  ],
  [
    '        disposeRoutes: () => {\n            heart.dispose();\n            vscode.dispose();\n        },',
    '        disposeRoutes: async () => {\n            heart.dispose();\n            vscode.dispose();\n            await narrative.dispose();\n        },',
  ],
])

edit('main.js', [['            disposeRoutes();\n', '            yield disposeRoutes();\n']])
