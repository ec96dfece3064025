/** How crowded the webhook endpoint is: what the dispatcher's ingest-first rule reads (api/dispatcher.ts). */

/**
 * Webhook requests in flight in this process, as the dispatcher reads them: the peak over the last
 * 250–500 ms, so the brief dips between a busy sender's requests do not read as calm.
 */
export function createWebhookLoad(bucketMs = 250) {
  let inFlight = 0;
  let peak = 0;
  let previousPeak = 0;
  let bucketAt = 0;
  const roll = (now: number) => {
    if (now - bucketAt < bucketMs) return;
    previousPeak = now - bucketAt < 2 * bucketMs ? peak : 0;
    peak = inFlight;
    bucketAt = now;
  };
  return {
    started(): void {
      inFlight++;
      roll(Date.now());
      if (inFlight > peak) peak = inFlight;
    },
    ended(): void {
      inFlight--;
    },
    get inFlight(): number {
      return inFlight;
    },
    /** The most requests in flight at once lately (the current and the previous bucket). */
    recentPeak(): number {
      roll(Date.now());
      return Math.max(peak, previousPeak, inFlight);
    },
  };
}

export type WebhookLoad = ReturnType<typeof createWebhookLoad>;
