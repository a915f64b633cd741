// Runs the sketch on the host: setup() once, loop() forever (with a tiny sleep: no busy-wait).
#include "Arduino.h"
#include "Wire.h"

HostSerial Serial;
HostWire Wire;
isr_t g_isr = 0;

#include "halofarm_inameter.ino"

int main() {
  setvbuf(stdout, NULL, _IONBF, 0);
  setup();
  for (;;) {
    loop();
    usleep(100);
  }
}
