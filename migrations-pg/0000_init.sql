CREATE TABLE "audit_checkpoints" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"kind" text NOT NULL,
	"size" bigint NOT NULL,
	"head_hash" text NOT NULL,
	"time" bigint NOT NULL,
	"jws" text NOT NULL,
	"note" text
);
--> statement-breakpoint
CREATE TABLE "audit_log" (
	"seq" bigint PRIMARY KEY NOT NULL,
	"entry" text NOT NULL,
	"prev_hash" text NOT NULL,
	"hash" text NOT NULL,
	"ts" bigint GENERATED ALWAYS AS ((((replace(entry, '\u0000', '\ufffd')::json) ->> 'ts')::bigint)) STORED,
	"action" text GENERATED ALWAYS AS (((replace(entry, '\u0000', '\ufffd')::json) ->> 'action')) STORED,
	"actor" text GENERATED ALWAYS AS (((replace(entry, '\u0000', '\ufffd')::json) -> 'actor' ->> 'name')) STORED
);
--> statement-breakpoint
CREATE TABLE "audit_tiles" (
	"level" bigint NOT NULL,
	"idx" bigint NOT NULL,
	"hashes" "bytea" NOT NULL,
	CONSTRAINT "audit_tiles_level_idx_pk" PRIMARY KEY("level","idx")
);
--> statement-breakpoint
CREATE TABLE "audit_witness_cosignatures" (
	"witness_key" text NOT NULL,
	"origin" text NOT NULL,
	"size" bigint NOT NULL,
	"root_hash" text NOT NULL,
	"timestamp" bigint NOT NULL,
	"signature" text NOT NULL,
	"received_at" bigint NOT NULL,
	CONSTRAINT "audit_witness_cosignatures_witness_key_origin_size_pk" PRIMARY KEY("witness_key","origin","size")
);
--> statement-breakpoint
CREATE TABLE "events" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"type" text NOT NULL,
	"session_id" text,
	"data" text NOT NULL,
	"ts" bigint NOT NULL
);
--> statement-breakpoint
CREATE TABLE "session_logs" (
	"session_id" text NOT NULL,
	"line" bigint NOT NULL,
	"stream" text NOT NULL,
	"text" text NOT NULL,
	"ts" bigint NOT NULL,
	CONSTRAINT "session_logs_session_id_line_pk" PRIMARY KEY("session_id","line")
);
--> statement-breakpoint
CREATE TABLE "sessions" (
	"id" text PRIMARY KEY NOT NULL,
	"name" text,
	"workspace" text NOT NULL,
	"prd" text NOT NULL,
	"sandbox" boolean NOT NULL,
	"budget_usd" double precision,
	"cost_usd" double precision DEFAULT 0 NOT NULL,
	"status" text NOT NULL,
	"reason" text,
	"exit_code" bigint,
	"created_by" text NOT NULL,
	"created_at" bigint NOT NULL,
	"started_at" bigint,
	"ended_at" bigint,
	"worker_id" text,
	"lease_id" text,
	"lease_expires_at" bigint,
	"stop_requested" boolean DEFAULT false NOT NULL,
	"last_event_seq" bigint DEFAULT 0 NOT NULL,
	"log_bytes" bigint DEFAULT 0 NOT NULL,
	"log_lines" bigint DEFAULT 0 NOT NULL,
	"container_id" text,
	"base_branch" text,
	"agent_branch" text,
	"policy" text,
	"policy_sha256" text,
	"result" text,
	"result_patch" text
);
--> statement-breakpoint
CREATE TABLE "tokens" (
	"id" text PRIMARY KEY NOT NULL,
	"name" text NOT NULL,
	"hash" text NOT NULL,
	"legacy_salt" text,
	"role" text NOT NULL,
	"scopes" text NOT NULL,
	"created_at" bigint NOT NULL,
	"expires_at" bigint,
	"last_used_at" bigint,
	"revoked_at" bigint,
	"created_by" text,
	"source" text DEFAULT 'native' NOT NULL,
	"worker_id" text
);
--> statement-breakpoint
CREATE INDEX "audit_checkpoints_size_idx" ON "audit_checkpoints" USING btree ("size");--> statement-breakpoint
CREATE UNIQUE INDEX "audit_checkpoints_periodic_uq" ON "audit_checkpoints" USING btree ("size") WHERE kind = 'periodic';--> statement-breakpoint
CREATE INDEX "audit_ts_idx" ON "audit_log" USING btree ("ts");--> statement-breakpoint
CREATE INDEX "audit_action_idx" ON "audit_log" USING btree ("action");--> statement-breakpoint
CREATE INDEX "events_ts_idx" ON "events" USING btree ("ts");--> statement-breakpoint
CREATE INDEX "events_session_idx" ON "events" USING btree ("session_id","id");--> statement-breakpoint
CREATE INDEX "sessions_status_idx" ON "sessions" USING btree ("status","created_at");--> statement-breakpoint
CREATE UNIQUE INDEX "tokens_name_uq" ON "tokens" USING btree ("name");--> statement-breakpoint
CREATE UNIQUE INDEX "tokens_hash_uq" ON "tokens" USING btree ("hash");