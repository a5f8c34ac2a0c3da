/**
 * The `onceq` executable of the published package: the product commands, and one clear line for
 * the repository's tools (demo, bench, chaos, soak), which tools/cli.ts runs in a checkout.
 */
import { addMissingToolCommands, buildProgram } from './program.js';

await addMissingToolCommands(buildProgram()).parseAsync(process.argv);
