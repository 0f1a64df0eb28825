export async function runWorkerCli(_o: unknown): Promise<void> {
  process.stderr.write('loki: not implemented yet\n');
  process.exit(2);
}
