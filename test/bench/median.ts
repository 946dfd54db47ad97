/** The middle of several timings (the upper middle for an even count): what the bench sections report. */
export const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]
