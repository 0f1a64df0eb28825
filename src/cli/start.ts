export async function runStart(_prd: string, _o: unknown): Promise<number> {
  process.stderr.write('loki: not implemented yet\n');
  return 2;
}
