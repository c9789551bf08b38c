-- v20: the APK library (issue 20.1; actors/apps/library.py). Farm-wide, no client's rows.
-- apk_files (v5) holds one row per file of an app version: the base APK, each config or
-- feature split, each OBB; what the binary manifest says, never the file name. The file
-- itself is DATA/apks/<sha256>.apk|.obb, stored once however many rows name it.
-- version (v5, NOT NULL) is the base's versionName; split_info (v5) the split's name.
ALTER TABLE apk_files ADD COLUMN sha256 TEXT;
ALTER TABLE apk_files ADD COLUMN kind TEXT NOT NULL DEFAULT 'apk';
ALTER TABLE apk_files ADD COLUMN entry_name TEXT;
ALTER TABLE apk_files ADD COLUMN part TEXT NOT NULL DEFAULT '';
ALTER TABLE apk_files ADD COLUMN version_code INTEGER;
ALTER TABLE apk_files ADD COLUMN min_sdk INTEGER;
ALTER TABLE apk_files ADD COLUMN target_sdk INTEGER;
ALTER TABLE apk_files ADD COLUMN abis TEXT;
ALTER TABLE apk_files ADD COLUMN densities TEXT;
ALTER TABLE apk_files ADD COLUMN uploaded_by TEXT;
-- part: '' for the base, the split's name, or 'obb:<file name>': one file per part of a
-- version (kind 'apk' | 'obb'; abis and densities are JSON lists).
CREATE UNIQUE INDEX apk_files_version_part ON apk_files (app_id, version_code, part);
CREATE INDEX apk_files_sha256 ON apk_files (sha256);
