// Mocha runs the TypeScript sources through tsx, so tests never see stale build output.
module.exports = {
  'node-option': ['import=tsx'],
  extension: ['ts'],
  require: ['test/support/hooks.ts'],
  timeout: 30000,
  forbidOnly: Boolean(process.env.CI),
  forbidPending: Boolean(process.env.CI),
  reporter: 'spec',
};
