# syntax=docker/dockerfile:1
# One image for the api, worker and migrate processes (the command picks the role):
#   node dist/api/server.js (default) · node dist/worker/main.js · node dist/lib/migrate-cli.js
# The build stage compiles TypeScript (npm run build → dist/); the runtime stage holds only the
# production dependencies, dist/ (with config/plans.json, emitted by tsc) and migrations/.
ARG NODE_IMAGE=node:20-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts matches the npm 11 default the project is developed with: no dependency needs its
# install script (prebuilt binaries come from optional platform packages in the lockfile).
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY api ./api
COPY worker ./worker
COPY workflows ./workflows
COPY activities ./activities
COPY domain ./domain
COPY lib ./lib
COPY config ./config
RUN npm run build

FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production \
    NPM_CONFIG_UPDATE_NOTIFIER=false
WORKDIR /app
# Files stay root-owned: the process can read its code but not rewrite it.
COPY package.json ./
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# lib/migrate.ts reads them from <root>/migrations (the migrate role and the API's /readyz).
COPY migrations ./migrations
USER node
EXPOSE 3000
# The API's readiness: 200 while Postgres answers and the schema is current (also while Temporal is
# down: webhooks are still stored). The worker and migrate roles override it (docker-compose.yml).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 3000) + '/readyz', { signal: AbortSignal.timeout(4000) }).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# node itself, not npm: SIGTERM reaches the process, which drains and exits (api/server.ts, worker/main.ts).
CMD ["node", "dist/api/server.js"]
