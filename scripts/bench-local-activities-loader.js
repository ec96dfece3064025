/**
 * Webpack loader for the bench's worker variant (scripts/bench-worker-variant.ts): rewrites the customer
 * workflow's `db` proxy from proxyActivities to proxyLocalActivities, to measure what local activities
 * would save per event. An experiment only: switching a running workflow's activities to local ones
 * needs patched() versioning, see the bench notes.
 */
module.exports = function localActivitiesLoader(source) {
  if (!source.includes('const db = proxyActivities<Activities>({')) {
    throw new Error('bench-local-activities-loader: workflows/customer.ts no longer declares `const db = proxyActivities<Activities>({`');
  }
  return source
    .replace('const db = proxyActivities<Activities>({', 'const db = proxyLocalActivities<Activities>({')
    .replace(/\n  proxyActivities,\n/, '\n  proxyActivities,\n  proxyLocalActivities,\n');
};
