// ESLint flat config: typescript-eslint on every source, test and migration file.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  {
    ignores: ['dist/**', 'node_modules/**', 'bin/**', 'docs/api/**', 'examples/**/node_modules/**'],
  },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_' },
      ],
      'no-restricted-imports': 'off',
    },
  },
  {
    // CommonJS config files (mocha reads .mocharc.cjs) run in Node with its globals.
    files: ['**/*.cjs'],
    languageOptions: {
      sourceType: 'commonjs',
      globals: { module: 'writable', require: 'readonly', process: 'readonly' },
    },
  },
  {
    // core/ is pure logic: no drivers, no I/O (STYLE.md "The house").
    files: ['src/core/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            'pg',
            'ioredis',
            'bullmq',
            'fastify',
            'kysely',
            '../db/*',
            '../redis/*',
            '../worker/*',
          ],
        },
      ],
    },
  },
);
