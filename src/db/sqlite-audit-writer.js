// Entry of the audit writer thread (sqlite-audit-thread.ts). Plain JavaScript:
// it registers the TypeScript loader for this thread, then loads the writer.
import { register } from 'tsx/esm/api';

register();
await import('./sqlite-audit-writer-thread.ts');
