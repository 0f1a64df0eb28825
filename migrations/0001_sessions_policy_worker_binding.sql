ALTER TABLE `sessions` ADD `policy` text;--> statement-breakpoint
ALTER TABLE `sessions` ADD `policy_sha256` text;--> statement-breakpoint
ALTER TABLE `sessions` ADD `result` text;--> statement-breakpoint
ALTER TABLE `sessions` ADD `result_patch` text;--> statement-breakpoint
ALTER TABLE `tokens` ADD `worker_id` text;