// A host stand-in for Wire with an INA3221 on it: every channel carries INA_MA through a 1 ohm
// shunt at 3.3 V (what the sketch's shunt table says).
#pragma once
#include <stdint.h>

#ifndef INA_MA
#define INA_MA 5
#endif

class HostWire {
 public:
  void begin() {}
  void setClock(unsigned long) {}
  void beginTransmission(uint8_t) { n_ = 0; }
  void write(uint8_t b) {
    if (n_++ == 0) reg_ = b;
  }
  uint8_t endTransmission(bool = true) { return 0; }
  uint8_t requestFrom(uint8_t, uint8_t) {
    int16_t v = 0;
    if (reg_ >= 1 && reg_ <= 6) {
      if (reg_ % 2 == 1) v = (int16_t)((INA_MA * 1000 / 40) << 3);  // shunt: 40 uV LSB, 1 ohm
      else v = (int16_t)((3300 / 8) << 3);                            // bus: 8 mV LSB
    }
    out_[0] = (uint8_t)((uint16_t)v >> 8);
    out_[1] = (uint8_t)(v & 0xFF);
    pos_ = 0;
    return 2;
  }
  int read() { return pos_ < 2 ? out_[pos_++] : -1; }

 private:
  uint8_t reg_ = 0, n_ = 0, out_[2] = {0, 0}, pos_ = 0;
};
extern HostWire Wire;
