// `mia-narrative-session/handler` for TypeScript's `moduleResolution: "node"`, which ignores
// package.json `exports`: the same declarations as `exports["./handler"].types`.
export * from './lib/handler'
