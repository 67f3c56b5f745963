// Lists several pages need (room names for run rows, computer names for agents): fetched
// once, refreshed on demand. Each page still reloads what it shows itself.

import { get } from "./api.js";

const rooms = { byId: new Map(), byName: new Map(), promise: null };
const computers = { byId: new Map(), promise: null };

/** Every room (GET /api/rooms); `force` reloads. */
export function loadRooms(force = false) {
  if (!rooms.promise || force) {
    const promise = get("/api/rooms", undefined, { quiet: true }).then((data) => {
      rooms.byId.clear();
      rooms.byName.clear();
      for (const room of data.rooms) {
        rooms.byId.set(room.id, room);
        rooms.byName.set(room.name, room);
      }
      return data.rooms;
    });
    promise.catch(() => {
      if (rooms.promise === promise) rooms.promise = null; // try again next time
    });
    rooms.promise = promise;
  }
  return rooms.promise;
}

/** The name of room `id` if known, else the id itself. */
export function roomName(id) {
  return rooms.byId.get(id)?.name ?? id ?? "";
}

export function roomById(id) {
  return rooms.byId.get(id);
}

/** Every computer (GET /api/computers); `force` reloads. */
export function loadComputers(force = false) {
  if (!computers.promise || force) {
    const promise = get("/api/computers", undefined, { quiet: true }).then((data) => {
      computers.byId.clear();
      for (const computer of data.computers) computers.byId.set(computer.id, computer);
      return data.computers;
    });
    promise.catch(() => {
      if (computers.promise === promise) computers.promise = null;
    });
    computers.promise = promise;
  }
  return computers.promise;
}

/** The name of computer `id` if known, else the id. */
export function computerName(id) {
  return computers.byId.get(id)?.name ?? id ?? "";
}

export function computerById(id) {
  return computers.byId.get(id);
}
