# syntax=docker/dockerfile:1
# Runtime image for the api, worker and migrate processes (one image, the command picks the role).
# TypeScript runs through tsx, a production dependency, so there is no compile stage.
ARG NODE_IMAGE=node:20-bookworm-slim

FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts matches the npm 11 default the project is developed with: no dependency needs its
# install script (prebuilt binaries come from optional platform packages in the lockfile).
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production \
    NPM_CONFIG_UPDATE_NOTIFIER=false
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
# Files stay root-owned: the process can read its code but not rewrite it.
COPY . .
USER node
EXPOSE 3000
CMD ["npm", "run", "api"]
