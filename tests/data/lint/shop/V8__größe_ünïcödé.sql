-- Größe: non-ASCII names, in the file name too
CREATE TABLE "neu_größe" ("maß" bigint PRIMARY KEY);
CREATE INDEX "neu_größe_maß" ON "neu_größe" ("maß");
CREATE INDEX "bestellungen_größe" ON "bestellungen_ä" ("größe");
