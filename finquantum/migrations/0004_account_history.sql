-- The first booking day each account's transactions were fetched for, over all its ingestions
-- (`yyyy-mm-dd`, Brasília): where the history a statement speaks for begins. An account fetched
-- before it was kept counts from the first day of its last fetch's window.

ALTER TABLE accounts ADD COLUMN booked_from TEXT;
