import type { ChainRow, RangeFailure } from './chain';

export declare function checkRun(
  rows: Iterable<ChainRow>,
  expectedStart: number,
  expectedPrev: string | null,
  sha256: (s: string) => string,
): { failure: RangeFailure | null; count: number; lastHash: string | null; lastSeq: number; firstPrev: string | null };
