-- v12: secrets at rest (issue 17.5). Account and profile passwords are stored sealed
-- (Fernet under a key derived per organization from the farm master key,
-- actors.access.secrets_box), with the organization whose key sealed them (NULL: none).
-- The old plaintext columns accounts.password and profiles.profile_password are emptied by
-- FarmDB._seal_plaintext_secrets at the coordinator's start and never written again.
ALTER TABLE accounts ADD COLUMN password_sealed TEXT;
ALTER TABLE accounts ADD COLUMN password_org INTEGER;
ALTER TABLE profiles ADD COLUMN profile_password_sealed TEXT;
ALTER TABLE profiles ADD COLUMN password_org INTEGER;
